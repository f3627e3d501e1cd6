"""Scaling sweeps and framework comparisons: many runs through the normal `mnist-dist run`, one
subprocess each, so a failed point is recorded and the rest go on. The numbers come back from each
run's summary.json; launch.report turns them into tables, plots and TensorBoard scalars.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launch.config import Config
from launch.errors import UserError
from launch.rundir import SUMMARY_FILE
from launch.summary import Summary, read_summary


@dataclass
class Point:
    framework: str
    workers: int
    repeat: int
    run_name: str
    exit_code: int
    summary: Summary | None  # None when the run failed

    @property
    def ok(self) -> bool:
        return self.summary is not None


def parse_list(text: str, kind=str) -> list:
    try:
        items = [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}s") from None
    if not items:
        raise UserError("an empty list: give at least one value, e.g. 1,2,4")
    return items


def per_worker_batch(config: Config, mode: str, workers: int) -> int:
    """Strong scaling keeps the global batch (train.batch_size); weak keeps the per-worker batch."""
    if mode == "weak":
        return config.train.batch_size
    if config.train.batch_size % workers:
        raise UserError(f"strong scaling splits the global batch {config.train.batch_size} over {workers} workers: "
                        "choose a train.batch_size divisible by every worker count")
    return config.train.batch_size // workers


VARIANTS = ("torch", "tf", "horovod")  # horovod: torch_dist with dist.backend=horovod


def run_point(framework: str, workers: int, run_name: str, log_dir: Path, launcher: str, config_path: str | None,
              overrides: list[str], run_options: list[str] = ()) -> Point:
    """One training through `mnist-dist run`; its output streams through, its summary is read back."""
    label = framework
    if framework == "horovod":
        framework, overrides = "torch", [*overrides, "dist.backend=horovod"]
        if launcher in ("local", "torchrun"):
            launcher = "horovodrun"  # Horovod's own rendezvous; mpirun and slurm (mpi template) work as they are
        elif launcher == "slurm":
            run_options = ["--template", "mpi", *run_options]
    cmd = [sys.executable, "-m", "launch", "run", "--framework", framework, "--launcher", launcher,
           "--nproc", str(workers), *run_options, *(["--wait"] if launcher == "slurm" else []),
           *(["--config", config_path] if config_path else []),
           *overrides, f"log.dir={log_dir}", f"log.run_name={run_name}", "log.progress=never"]
    print(f"mnist-dist: {label} x{workers}: {run_name}", flush=True)
    code = subprocess.run(cmd).returncode
    # Slurm runs append the job id to the run name
    found = sorted(log_dir.glob(f"{run_name}/{SUMMARY_FILE}")) + sorted(log_dir.glob(f"{run_name}-*/{SUMMARY_FILE}"))
    summary = read_summary(found[0]) if code == 0 and found else None
    if summary is None:
        print(f"mnist-dist: {run_name} failed (exit code {code}); the sweep goes on", flush=True)
    return Point(label, workers, 0, run_name, code, summary)


def sweep(config: Config, config_path: str | None, overrides: list[str], frameworks: list[str], workers: list[int],
          mode: str, repeats: int, steps: int, warmup: int, launcher: str, out: Path,
          run_options: list[str] = (), gpus: bool = False) -> list[Point]:
    """Every (framework, world size, repeat), each for `warmup` + `steps` steps; repeats interleave."""
    points = []
    for repeat in range(repeats):
        for framework in frameworks:
            for n in workers:
                batch = per_worker_batch(config, mode, n)
                point = run_point(framework, n, f"{framework}-w{n}-r{repeat}", out / "runs", launcher, config_path,
                                  [*overrides, f"train.batch_size={batch}", f"train.warmup_steps={warmup}",
                                   f"train.max_steps={warmup + steps}", "train.epochs=1000000",
                                   "checkpoint.interval=0"],
                                  [*run_options, *([f"--gpus-per-node={n}"] if gpus else [])])
                point.repeat = repeat
                points.append(point)
    return points
