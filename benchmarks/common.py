"""Shared benchmark harness: interleaved repeats, medians with spread, a Markdown table.

Benchmarks measure ratios against a bare loop run in the same process, interleaved, so that the
noise of a shared machine hits both sides alike. They are measurements, never tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from launch.config import load_config
from launch.summary import read_summary

ROOT = Path(__file__).resolve().parent.parent


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps", type=int, default=1000, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def trainer_config(args: argparse.Namespace, log_dir: str, name: str, overrides: tuple[str, ...] = ()):
    """The trainer's config for a throughput run equal to the bare loop's."""
    return load_config(
        ROOT / "configs" / f"{args.model}.yaml",
        [
            "data.dataset=synthetic",
            f"train.batch_size={args.batch}",
            f"train.threads={args.threads}",
            f"train.precision={args.precision}",
            f"train.warmup_steps={args.warmup}",
            f"train.max_steps={args.warmup + args.steps}",
            f"log.dir={log_dir}",
            f"log.run_name={name}",
            "log.progress=never",
            "checkpoint.interval=0",
            "train.epochs=1000",
            *overrides,
        ],
    )


def interleave(runners: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Run each runner once per repeat, in turn; each returns images/sec."""
    results: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(repeats):
        for name, runner in runners.items():
            results[name].append(runner(r))
    return results


def summary_rate(run_dir: Path) -> float:
    return read_summary(run_dir / "summary.json").images_per_sec


def temp_dir() -> str:
    return tempfile.mkdtemp(prefix="mnist-dist-bench-")


def report(title: str, args: argparse.Namespace, results: dict[str, list[float]], baseline: str, versions: str) -> None:
    """Print a Markdown table: median img/s, spread (min..max), ratio of medians to the baseline."""
    base = statistics.median(results[baseline])
    print(f"\n### {title}\n")
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), model {args.model}, "
        f"batch {args.batch}, {args.precision}, {args.steps} measured steps x {args.repeats} repeats "
        f"(interleaved), {versions}\n"
    )
    print("| loop | median img/s | min..max | ratio to " + baseline + " |")
    print("|---|---:|---:|---:|")
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f}..{max(rates):,.0f} | {med / base:.3f} |")
