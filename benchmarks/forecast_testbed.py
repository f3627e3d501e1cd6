"""The forecast held against the testbed: `python benchmarks/forecast_testbed.py [--out DIR]` (root).

For each model, `mnist-dist sweep --testbed PROFILES --forecast` over 1, 2 and 3 hosts, both
frameworks, interleaved repeats: the forecast calibrates from the 1-worker points, the unshaped
profile's points and the slowest profile's 2-worker point, and is printed beside every measured
point with its error (launch/experiments/held.py says what it predicts and what it takes as
measured, and why). Prints one Markdown report; the sweeps' folders
stay under --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# warm-up and measured steps per model: TensorFlow's MLP needs ~100 steps to reach its steady state
# (docs/performance.md), and the MLP's ~1 ms steps need a few hundred for a window of a second
STEPS = {"mlp": (120, 300), "cnn": (20, 60)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--profiles", default="loopback,1g,100m")
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="measured steps per point (default: per model, STEPS)")
    parser.add_argument("--warmup", type=int, help="warm-up steps per point (default: per model, STEPS)")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here (default: a temp folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mnist-dist-forecast-"))
    report = [
        f"# The forecast on the testbed ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "",
        f"`{' '.join(sys.argv)}`: {args.repeats} interleaved repeats, 1 thread per worker, synthetic data, "
        "batch 128 per worker.",
    ]
    for model in args.models.split(","):
        sweep = out / model
        warmup, steps = args.warmup or STEPS[model][0], args.steps or STEPS[model][1]
        command = [sys.executable, "-m", "launch", "sweep", "--testbed", args.profiles, "--forecast"]
        command += ["--framework", "torch,tf", "--workers", args.workers, "--repeats", str(args.repeats)]
        command += ["--steps", str(steps), "--warmup", str(warmup), "--out", str(sweep)]
        command += ["--config", str(ROOT / "configs" / f"{model}.yaml"), "data.dataset=synthetic", "train.threads=1"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"forecast_testbed: the {model} sweep failed ({done.returncode}): {done.stderr[-2000:]}")
        links = [line for line in (sweep / "scaling.md").read_text().splitlines() if "Gbit/s" in line]
        held = (sweep / "forecast.md").read_text().split("\n", 2)[2]
        report += ["", f"## {model}", "", f"{steps} measured steps after {warmup} of warm-up.", *links, "", held]
    print("\n".join(report))


if __name__ == "__main__":
    main()
