"""Every benchmark, one command: `python benchmarks/run_all.py [--quick]`. Prints one Markdown report.

1. trainer vs bare loop, 1 worker, both frameworks (benchmarks/torch_overhead.py, tf_overhead.py);
2. 2-worker scaling efficiency, 1 thread per worker, batch 128 per worker, MLP and CNN, torch DDP and
   TF multi-worker (`mnist-dist sweep`, weak scaling, interleaved repeats);
3. startup time to the first step, from the same runs' summaries.
Numbers are ratios measured side by side in one run; absolute figures depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args()
    steps, repeats = (200, 2) if args.quick else (1000, 5)
    with tempfile.TemporaryDirectory(prefix="mnist-dist-benchmarks-") as out:
        print("\n".join(sections(Path(out), steps, repeats)))


def sections(out: Path, steps: int, repeats: int) -> list[str]:
    """The report's parts; `out` holds the sweeps' runs, removed afterwards (the report is the result)."""
    parts = []
    for script in ("torch_overhead.py", "tf_overhead.py"):
        parts.append(
            _table(_run([sys.executable, str(HERE / script), "--steps", str(steps), "--repeats", str(repeats)]))
        )
    parts.append("### 2-worker scaling efficiency (weak, 1 thread per worker, batch 128 per worker)\n")
    parts.append("| model | framework | 1 worker img/s | 2 workers img/s | efficiency | startup to first step (s) |")
    parts.append("|---|---|---:|---:|---:|---:|")
    for model in ("mlp", "cnn"):
        sweep = out / f"sweep-{model}"
        _run(
            [
                sys.executable,
                "-m",
                "launch",
                "sweep",
                "--framework",
                "torch,tf",
                "--workers",
                "1,2",
                "--repeats",
                str(max(2, repeats - 2)),
                "--steps",
                str(steps // (5 if model == "cnn" else 2)),
                "--out",
                str(sweep),
                "--config",
                str(ROOT / "configs" / f"{model}.yaml"),
                "data.dataset=synthetic",
                "train.threads=1",
                "train.batch_size=128",
                f"dist.bucket_mb={0.1 if model == 'mlp' else 25}",
            ]
        )  # small buckets overlap the MLP's all-reduce
        rows = list(csv.DictReader(open(sweep / "scaling.csv")))
        for framework in ("torch", "tf"):
            one, two = (next(r for r in rows if r["framework"] == framework and r["workers"] == n) for n in "12")
            startup = statistics.median(
                __import__("json").loads(p.read_text())["startup_s"]
                for p in (sweep / "runs").glob(f"{framework}-w1-*/summary.json")
            )
            parts.append(
                f"| {model} | {framework} | {float(one['images_per_sec_mean']):,.0f} | "
                f"{float(two['images_per_sec_mean']):,.0f} | {float(two['efficiency']):.2f} | "
                f"{startup:.2f} |"
            )
    return parts


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def _table(output: str) -> str:
    """The Markdown part of a benchmark's output (from its ### heading on)."""
    return output[output.index("### ") :].strip() + "\n"


if __name__ == "__main__":
    main()
