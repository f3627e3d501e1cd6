"""Time to accuracy at N workers: `python benchmarks/time_to_accuracy.py [--model mlp] [--target 0.85]`.

One process per global batch of 1, 2, 4, 8 and 16 workers' worth (train.accumulate_steps=k and
the learning rate the config's lr_scaling gives k workers), on Fashion-MNIST, --seeds seeds each;
then `mnist-dist forecast` calibrated from a 1-worker run, with --accuracy: the epochs each global
batch took to the target, and the forecast time to it at 1 ... 1024 workers on the stated cluster.
Prints one Markdown report; the runs stay under --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from launch.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ["--per-node", "8", "--intra-gbit", "100", "--inter-gbit", "10"]  # 8 CPU workers a node, 10 GbE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--epochs", type=int, default=30, help="the most any global batch trains")
    parser.add_argument("--workers", default="1,2,4,8,16", help="the global batches, in workers' worth")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mnist-dist-accuracy-"))
    config = ROOT / "configs" / f"{args.model}.yaml"
    lr_for = load_config(config).scaled_lr
    runs = [
        _train(config, out / f"k{k}-s{seed}", k, lr_for(k), seed, args.epochs)
        for seed in range(args.seeds)
        for k in (int(w) for w in args.workers.split(","))
    ]
    forecast = [sys.executable, "-m", "launch", "forecast", str(runs[0]), *CLUSTER, "--out", str(out / "forecast")]
    forecast += ["--accuracy", str(args.target), "--accuracy-runs", *map(str, runs)]
    done = subprocess.run(forecast, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"time_to_accuracy: the forecast failed: {done.stderr[-2000:]}")
    print(f"# Time to {args.target:.0%} accuracy: {args.model}, Fashion-MNIST\n")
    print(f"`{' '.join(sys.argv)}`: {args.seeds} seeds per global batch, batch 128 per worker; forecast on ")
    print(f"`{' '.join(CLUSTER)}`, calibrated from {runs[0].name}.\n")
    print(done.stdout)


def _train(config: Path, folder: Path, k: int, lr: float, seed: int, epochs: int) -> Path:
    """One process standing in for k workers: k micro-batches per step, the lr k workers get."""
    command = [sys.executable, "-m", "launch", "run", "--framework", "torch", "--nproc", "1", "--config", str(config)]
    command += ["data.dataset=fashion-mnist", f"train.epochs={epochs}", f"train.accumulate_steps={k}"]
    command += [f"train.lr={lr}", f"train.seed={seed}", "train.threads=1", "checkpoint.interval=0"]
    command += [f"log.dir={folder.parent}", f"log.run_name={folder.name}", "log.progress=never"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"time_to_accuracy: {folder.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return folder


if __name__ == "__main__":
    main()
