"""Where a PyTorch step's time goes, from PyTorch's own profiler: the counterpart of tf_profile.py.

    python benchmarks/torch_profile.py --model cnn        # 1 worker, 1 thread, batch 128

Builds torch_dist's engine (the trainer's model, optimizer, step and input slicing), runs warm-up
steps, then profiles --steps steps with torch.profiler: the wall time per step, and the operators
by self time (time in the operator itself, not in the operators it calls), with the kernel family
they dispatch to (mkldnn/oneDNN or PyTorch's own). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from launch.cluster.world import World  # noqa: E402
from launch.config import load_config  # noqa: E402
from launch.data.shard import shard_indices  # noqa: E402
from torch_dist import distributed  # noqa: E402
from torch_dist.train import TorchEngine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="cnn")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.threads=2")
    args = parser.parse_args()
    config = load_config(
        ROOT / "configs" / f"{args.model}.yaml",
        ["data.dataset=synthetic", "train.batch_size=128", "train.threads=1", *args.overrides],
    )
    torch.set_num_threads(config.train.threads)
    world = World()
    comm, device = distributed.connect(config.dist, world, 0)
    engine = TorchEngine(config, world, comm, device)
    engine.start_epoch(shard_indices(engine.n_train, 0, 1, 0, 0).indices)
    for i in range(20):  # warm-up: allocator, oneDNN primitive caches
        engine.train_step(i)
    engine.take_outputs()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        for i in range(20, 20 + args.steps):
            engine.train_step(i)
        engine.take_outputs()
        wall = time.perf_counter() - began
    print(report(args, config.train.threads, wall, prof.key_averages()))


def report(args, threads: int, wall: float, averages) -> str:
    steps = args.steps
    lines = [
        f"### PyTorch step profile: {args.model}, 1 worker, {threads} thread(s), batch 128 (torch {torch.__version__})\n",
        f"Wall time per step: {1000 * wall / steps:.2f} ms over {steps} profiled steps; "
        f"oneDNN (mkldnn) enabled: {torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled}.\n",
        f"Top {args.top} operators by self CPU time per step:\n",
        "| operator | self ms per step | total ms per step | calls per step |",
        "|---|---:|---:|---:|",
    ]
    for event in sorted(averages, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        lines.append(
            f"| `{event.key}` | {event.self_cpu_time_total / 1000 / steps:.2f} | "
            f"{event.cpu_time_total / 1000 / steps:.2f} | {event.count / steps:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
