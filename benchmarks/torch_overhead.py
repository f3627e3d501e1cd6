"""torch_dist's 1-worker throughput against a bare slicing loop with the same model, batch and threads.

    python benchmarks/torch_overhead.py [--model mlp|cnn] [--threads 1] [--repeats 5]

Both loops train on the same synthetic data, slice batches from a per-epoch gather and scale uint8
to float per batch; the bare loop has nothing else: no meter, no logging, no progress bar.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import arguments, interleave, report, summary_rate, temp_dir, trainer_config
from launch.cluster.world import World
from launch.data.datasets import synthetic
from torch_dist.models import build_model
from torch_dist.train import train


def bare_loop(args, images: np.ndarray, labels: np.ndarray) -> float:
    torch.manual_seed(0)
    model = build_model(args.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    b, step, total, images_seen = args.batch, 0, args.warmup + args.steps, 0
    while step < total:
        order = np.random.permutation(len(images))  # a new epoch: one gather (numpy's: fastest), then slices
        xs, ys = torch.from_numpy(images[order]), torch.from_numpy(labels[order])
        for i in range(min(-(-len(xs) // b), total - step)):
            if step == args.warmup:
                start = time.perf_counter()
            x = xs[i * b : (i + 1) * b].float().div_(255)
            y = ys[i * b : (i + 1) * b]
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            images_seen += len(y) if step > args.warmup else 0
    return images_seen / (time.perf_counter() - start)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    data = synthetic(seed=0)
    images, labels = data.train_images, data.train_labels.astype(np.int64)
    log_dir = temp_dir()

    def trainer(r: int) -> float:
        config = trainer_config(args, log_dir, f"torch-{r}")
        train(config, World())
        return summary_rate(Path(log_dir) / f"torch-{r}")

    results = interleave(
        {"bare slicing loop": lambda r: bare_loop(args, images, labels), "torch_dist": trainer}, args.repeats
    )
    report("torch_dist vs bare loop (1 worker)", args, results, "bare slicing loop", f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
