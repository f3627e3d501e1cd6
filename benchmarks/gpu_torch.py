"""Part 1 of benchmarks/gpu.py: torch_dist against bare loops on one GPU (or `--device cpu`), in
one process, interleaved: `python benchmarks/gpu_torch.py [--device cuda] [--model mlp] ...`.
benchmarks/gpu.py describes the variants and the targets; on the CPU, torch.compile and CUDA graphs
are left out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import interleave, measure_parser, medians, report, summary_rate, temp_dir, trainer_config
from launch.cluster.world import World
from launch.data.datasets import synthetic
from torch_dist.models import build_model
from torch_dist.train import train


def main() -> None:
    parser = measure_parser(__doc__.splitlines()[0], batch=512, warmup=50)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    args.threads, args.precision = 1, "bf16"
    results = torch_one_device(args)
    if any(isinstance(rates, str) for rates in results.values()):
        raise SystemExit("a variant failed: its row says why")


def torch_one_device(args) -> dict:
    """The trainer against bare loops on one device, interleaved."""
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    data = synthetic(seed=0)
    images = torch.tensor(data.train_images, device=device)
    labels = torch.tensor(data.train_labels, device=device, dtype=torch.long)
    loops = BareLoops(args, device, images, labels)
    log_dir = temp_dir()

    def trainer(backend: str, r: int) -> float:
        train(trainer_config(args, log_dir, f"{backend}-{r}", (f"dist.backend={backend}",)), World())
        return summary_rate(Path(log_dir) / f"{backend}-{r}")

    def dataloader(r: int) -> float:
        host = TensorDataset(torch.tensor(data.train_images), torch.tensor(data.train_labels, dtype=torch.long))
        loader = DataLoader(host, batch_size=args.batch, shuffle=True, drop_last=True, pin_memory=device.type == "cuda")

        def feed():
            while True:
                for x, y in loader:
                    yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        return loops.timed(loops.step(*loops.make()), feed())

    group = "nccl" if device.type == "cuda" else "gloo"
    runners = {
        "bare": lambda r: loops.timed(loops.step(*loops.make()), loops.batches()),
        "bare+ddp": lambda r: loops.with_ddp(group),
        "torch_dist": lambda r: trainer(group, r),
        "torch_dist, no DDP": lambda r: trainer("auto", r),
        "dataloader": dataloader,
    }
    if device.type == "cuda":  # what a GPU loop can add; on the CPU they would measure something else
        runners["bare+compile"] = lambda r: loops.timed(torch.compile(loops.step(*loops.make())), loops.batches())
        runners["bare+cudagraph"] = lambda r: loops.cudagraph()
    results = interleave(runners, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    report(f"torch on {name}", args, results, "bare", f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    median = medians(results)
    targets = {  # the trainer against the hand-written loop that does the same communication
        ("torch_dist", "bare+ddp"): 0.9,
        ("torch_dist, no DDP", "bare"): 0.9,
        ("torch_dist", "dataloader"): 1.5,
    }
    print()
    for (mine, reference), target in targets.items():
        if {mine, reference} <= median.keys():
            print(f"{mine} / {reference} = {median[mine] / median[reference]:.3f} (target >= {target})")
    return results


class BareLoops:
    """Hand-written loops over the same model, optimizer, batch and bf16 autocast as the trainer."""

    def __init__(self, args, device, images, labels):
        self.args, self.device, self.images, self.labels = args, device, images, labels

    def make(self, capturable: bool = False):
        torch.manual_seed(0)
        model = build_model(self.args.model).to(self.device)
        # foreach: the fast multi-tensor Adam without graphs; capturable only where a CUDA graph needs it
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True, capturable=capturable)

    def step(self, model, optimizer, set_to_none: bool = True):
        def step(x, y):
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x.float().div_(255)), y)
            optimizer.zero_grad(set_to_none=set_to_none)
            loss.backward()
            optimizer.step()
            return loss

        return step

    def batches(self):
        b = self.args.batch
        while True:
            order = torch.randperm(len(self.images), device=self.device)
            xs, ys = self.images[order], self.labels[order]
            for i in range(len(xs) // b):
                yield xs[i * b : (i + 1) * b], ys[i * b : (i + 1) * b]

    def timed(self, step, feed) -> float:
        args = self.args
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                self._sync()
                start = time.perf_counter()
            step(*next(feed))
        self._sync()
        return args.steps * args.batch / (time.perf_counter() - start)

    def with_ddp(self, backend: str) -> float:
        """The bare step with the model in DDP over a one-rank group, as the trainer's: what any
        hand-written DDP loop pays (its forward's bookkeeping, the gradients' all-reduce)."""
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        try:
            model, optimizer = self.make()
            ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
            return self.timed(self.step(ddp, optimizer), self.batches())
        finally:
            dist.destroy_process_group()

    def cudagraph(self) -> float:
        """The step captured once and replayed: gradients stay allocated (set_to_none=False), as graphs need."""
        model, optimizer = self.make(capturable=True)
        step, feed = self.step(model, optimizer, set_to_none=False), self.batches()
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

        return self.timed(replay, feed)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


if __name__ == "__main__":
    main()
