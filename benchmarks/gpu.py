"""The GPU path, for a machine with one NVIDIA GPU, PyTorch and no network: `python benchmarks/gpu.py`.

Installs nothing. Measures, interleaved and repeated (median), images/sec of:
  torch_dist        the trainer on cuda:0 with dist.backend=nccl (a one-rank process group and DDP,
                    as with more ranks), AMP bf16, the training set resident on the GPU;
  bare              a bare loop: the same model, optimizer, batch, bf16 autocast, data on the GPU;
  bare+compile      the bare step under torch.compile;
  bare+cudagraph    the bare step captured in a CUDA graph (static input buffers);
  dataloader        a per-sample Dataset + DataLoader pipeline from host memory, as the tutorials do;
and prints the ratios against the targets (torch_dist >= 0.9x bare, >= 10x the DataLoader pipeline).
Synthetic data: no download. Options as for the other benchmarks (--model cnn, --batch 512, ...).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from benchmarks.common import arguments, interleave, report, summary_rate, temp_dir, trainer_config
from launch.data import synthetic
from launch.world import World
from torch_dist.models import build_model
from torch_dist.train import train


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU; use torch_overhead.py on CPUs")
    args = arguments(__doc__.splitlines()[0])
    args.precision = "bf16"
    device = torch.device("cuda", 0)
    data = synthetic(seed=0)
    images = torch.tensor(data.train_images, device=device)
    labels = torch.tensor(data.train_labels, device=device, dtype=torch.long)
    total, b = args.warmup + args.steps, args.batch

    def batches():
        while True:
            order = torch.randperm(len(images), device=device)
            xs, ys = images[order], labels[order]
            for i in range(len(xs) // b):
                yield xs[i * b : (i + 1) * b], ys[i * b : (i + 1) * b]

    def make():
        torch.manual_seed(0)
        model = build_model(args.model).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)

    def step_fn(model, optimizer):
        def step(x, y):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x.float().div_(255)), y)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            return loss

        return step

    def timed(step, feed) -> float:
        for i in range(total):
            if i == args.warmup:
                torch.cuda.synchronize()
                start = time.perf_counter()
            step(*next(feed))
        torch.cuda.synchronize()
        return args.steps * b / (time.perf_counter() - start)

    def bare(r):
        return timed(step_fn(*make()), batches())

    def compiled(r):
        return timed(torch.compile(step_fn(*make())), batches())

    def cudagraph(r):
        model, optimizer = make()
        step = step_fn(model, optimizer)
        feed = batches()
        static_x, static_y = (t.clone() for t in next(feed))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up on a side stream before capture, as the docs require
            for _ in range(3):
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(static_x, static_y)

        def replay(x, y):
            static_x.copy_(x)
            static_y.copy_(y)
            graph.replay()

        return timed(replay, feed)

    def dataloader(r):
        from torch.utils.data import DataLoader, TensorDataset

        host = TensorDataset(torch.tensor(data.train_images), torch.tensor(data.train_labels, dtype=torch.long))
        loader = DataLoader(host, batch_size=b, shuffle=True, drop_last=True, pin_memory=True)
        step = step_fn(*make())

        def feed():
            while True:
                for x, y in loader:
                    yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        return timed(step, feed())

    log_dir = temp_dir()

    def trainer(r):
        train(trainer_config(args, log_dir, f"gpu-{r}", ("dist.backend=nccl",)), World())
        return summary_rate(Path(log_dir) / f"gpu-{r}")

    results = interleave(
        {
            "bare": bare,
            "torch_dist": trainer,
            "bare+compile": compiled,
            "bare+cudagraph": cudagraph,
            "dataloader": dataloader,
        },
        args.repeats,
    )
    report(
        f"GPU path on {torch.cuda.get_device_name(0)}",
        args,
        results,
        "bare",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}",
    )
    median = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(
        f"\ntorch_dist / bare = {median['torch_dist'] / median['bare']:.3f} (target >= 0.9); "
        f"torch_dist / dataloader = {median['torch_dist'] / median['dataloader']:.1f}x (target >= 10x)"
    )


if __name__ == "__main__":
    main()
