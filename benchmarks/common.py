"""Shared benchmark harness: interleaved repeats, medians with spread, a Markdown table.

Benchmarks measure ratios against a bare loop run in the same process, interleaved, so that the
noise of a shared machine hits both sides alike. They are measurements, never tests.
"""

from __future__ import annotations

import argparse
import atexit
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from launch.config import load_config
from launch.outputs.summary import read_summary

ROOT = Path(__file__).resolve().parent.parent


def measure_parser(description: str, batch: int = 128, warmup: int = 20) -> argparse.ArgumentParser:
    """The options every benchmark takes: model, batch, measured steps, warm-up, repeats."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=1000, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def arguments(description: str) -> argparse.Namespace:
    parser = measure_parser(description)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
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


def interleave(runners: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float] | str]:
    """Run each runner once per repeat, in turn; each returns images/sec. A runner that raises is
    reported by its error ("failed: ...") and not run again; the others are still measured."""
    results: dict[str, list[float] | str] = {name: [] for name in runners}
    for r in range(repeats):
        for name, runner in runners.items():
            if isinstance(results[name], str):
                continue
            try:
                results[name].append(runner(r))
            except Exception as exc:  # one variant's failure (no CUDA graphs, no compiler) loses only its row
                results[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"{name} {results[name]}", file=sys.stderr)
    return results


def medians(results: dict[str, list[float] | str]) -> dict[str, float]:
    """The median of every runner that was measured."""
    return {name: statistics.median(rates) for name, rates in results.items() if not isinstance(rates, str)}


def summary_rate(run_dir: Path) -> float:
    return read_summary(run_dir / "summary.json").images_per_sec


def temp_dir() -> str:
    """A folder for the trainer's runs, removed when the benchmark exits: the printed table is its result."""
    folder = tempfile.mkdtemp(prefix="mnist-dist-bench-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def report(
    title: str, args: argparse.Namespace, results: dict[str, list[float] | str], baseline: str, versions: str
) -> None:
    """Print a Markdown table: median img/s, spread (min..max), ratio of medians to the baseline; a
    runner that failed gets its error instead."""
    base = medians(results).get(baseline)
    print(f"\n### {title}\n")
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), model {args.model}, "
        f"batch {args.batch}, {args.precision}, {args.steps} measured steps x {args.repeats} repeats "
        f"(interleaved), {versions}\n"
    )
    print("| loop | median img/s | min..max | ratio to " + baseline + " |")
    print("|---|---:|---:|---:|")
    for name, rates in results.items():
        if isinstance(rates, str):
            print(f"| {name} | {rates} | | |")
            continue
        med = statistics.median(rates)
        ratio = f"{med / base:.3f}" if base else "no baseline"
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f}..{max(rates):,.0f} | {ratio} |")
