"""Scaling sweeps and framework comparisons: many runs through the normal `mnist-dist run`, one
subprocess each, so a failed point is recorded and the rest go on. The numbers come back from each
run's summary.json; launch.report turns them into tables, plots and TensorBoard scalars.

With network profiles a sweep runs on a testbed (launch/testbed.py) instead: N workers are N hosts of
one worker each, `mnist-dist run --hosts node1,...,nodeN --node-rank K` on host K, with every host's
link shaped to the profile; the 1-worker point of each profile is that profile's reference.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launch.config import Config
from launch.errors import UserError
from launch.rundir import SUMMARY_FILE
from launch.summary import Summary, read_summary
from launch.testbed import PROFILES, Testbed, missing_tools


@dataclass
class Point:
    framework: str
    workers: int
    repeat: int
    run_name: str
    exit_code: int
    summary: Summary | None  # None when the run failed
    profile: str = ""  # the testbed's network profile; "" on this host alone

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def series(self) -> str:
        return series_name(self.framework, self.profile)


def series_name(framework: str, profile: str) -> str:
    """One curve of a report, and its TensorBoard run: torch, or torch-1g on a testbed."""
    return f"{framework}-{profile}" if profile else framework


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


def testbed_problem(profiles: list[str], frameworks: list[str], launcher: str, gpus: bool) -> str | None:
    """Why a sweep cannot run these points on a testbed, or None."""
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        return f"unknown network profile(s) {unknown}: use {', '.join(PROFILES)}"
    if launcher not in ("local", "torchrun"):
        return f"--testbed starts one `mnist-dist run` per host: use --launcher local or torchrun, not {launcher}"
    if "horovod" in frameworks:
        return "--testbed runs torch and tf; horovod's launcher starts hosts over ssh, which testbed hosts lack"
    if gpus:
        return "--testbed hosts share this machine's CPUs: drop --gpus"
    return missing_tools()


def _variant(framework: str, launcher: str, overrides: list[str], run_options: list[str]):
    """horovod is torch_dist with dist.backend=horovod, under a launcher that starts Horovod's ranks."""
    if framework != "horovod":
        return framework, launcher, overrides, list(run_options)
    overrides = [*overrides, "dist.backend=horovod"]
    if launcher in ("local", "torchrun"):
        return "torch", "horovodrun", overrides, list(run_options)  # Horovod's own rendezvous
    if launcher == "slurm":
        return "torch", launcher, overrides, ["--template", "mpi", *run_options]
    return "torch", launcher, overrides, list(run_options)  # mpirun works as it is


def _run_command(framework: str, launcher: str, run_options: list[str], config_path: str | None,
                 overrides: list[str], log_dir: Path, run_name: str) -> list[str]:
    return [sys.executable, "-m", "launch", "run", "--framework", framework, "--launcher", launcher, *run_options,
            *(["--config", config_path] if config_path else []),
            *overrides, f"log.dir={log_dir}", f"log.run_name={run_name}", "log.progress=never"]


def _summary(log_dir: Path, run_name: str, code: int) -> Summary | None:
    # Slurm runs append the job id to the run name
    found = sorted(log_dir.glob(f"{run_name}/{SUMMARY_FILE}")) + sorted(log_dir.glob(f"{run_name}-*/{SUMMARY_FILE}"))
    summary = read_summary(found[0]) if code == 0 and found else None
    if summary is None:
        print(f"mnist-dist: {run_name} failed (exit code {code}); the sweep goes on", flush=True)
    return summary


def run_point(framework: str, workers: int, run_name: str, log_dir: Path, launcher: str, config_path: str | None,
              overrides: list[str], run_options: list[str] = ()) -> Point:
    """One training through `mnist-dist run`; its output streams through, its summary is read back."""
    label = framework
    framework, launcher, overrides, run_options = _variant(framework, launcher, overrides, run_options)
    cmd = _run_command(framework, launcher, ["--nproc", str(workers), *run_options,
                                             *(["--wait"] if launcher == "slurm" else [])],
                       config_path, overrides, log_dir, run_name)
    print(f"mnist-dist: {label} x{workers}: {run_name}", flush=True)
    code = subprocess.run(cmd).returncode
    return Point(label, workers, 0, run_name, code, _summary(log_dir, run_name, code))


def run_on_hosts(bed: Testbed, profile: str, framework: str, workers: int, run_name: str, log_dir: Path,
                 launcher: str, config_path: str | None, overrides: list[str], run_options: list[str] = ()) -> Point:
    """One training across the testbed's first `workers` hosts, one worker each. Host node1's output
    streams through; the others' goes to <log_dir>/<run_name>-<host>.log. When one host's run fails the
    others are stopped, and no process outlives the point."""
    hosts = [h.name for h in bed.hosts[:workers]]
    print(f"mnist-dist: {framework} on {workers} host(s), {profile}: {run_name}", flush=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for rank, host in enumerate(hosts):
            placement = ["--hosts", ",".join(hosts), "--node-rank", str(rank)] if workers > 1 else []
            cmd = _run_command(framework, launcher, [*placement, *run_options], config_path, overrides, log_dir,
                               run_name)
            if rank == 0:
                procs.append(bed.popen(host, cmd))
            else:
                with open(log_dir / f"{run_name}-{host}.log", "w") as log:
                    procs.append(bed.popen(host, cmd, stdout=log, stderr=subprocess.STDOUT))
        code = 0
        for proc, host in zip(procs, hosts):
            code = proc.wait()
            if code:
                print(f"mnist-dist: {run_name}: the run on {host} exited with code {code}"
                      + (f" (its log: {log_dir / f'{run_name}-{host}.log'})" if host != hosts[0] else ""), flush=True)
                break
    finally:
        for host in hosts:
            bed.kill_host(host)
        for proc in procs:
            proc.wait()
    return Point(framework, workers, 0, run_name, code, _summary(log_dir, run_name, code), profile)


def sweep(config: Config, config_path: str | None, overrides: list[str], frameworks: list[str], workers: list[int],
          mode: str, repeats: int, steps: int, warmup: int, launcher: str, out: Path,
          run_options: list[str] = (), gpus: bool = False, profiles: list[str] = (),
          links: dict[str, float] | None = None) -> list[Point]:
    """Every (profile, framework, world size, repeat), each for `warmup` + `steps` steps; repeats interleave,
    and so do profiles inside a repeat (a noisy minute hits them all). With profiles the points run on a
    testbed of max(workers) hosts, made here and removed at the end; `links` gets each profile's
    measured node1 -> node2 Gbit/s."""
    def measured(n: int) -> list[str]:  # a point's overrides: warm-up + steps, no checkpoints
        return [*overrides, f"train.batch_size={per_worker_batch(config, mode, n)}", f"train.warmup_steps={warmup}",
                f"train.max_steps={warmup + steps}", "train.epochs=1000000", "checkpoint.interval=0"]

    points = []
    if not profiles:
        for repeat in range(repeats):
            for framework in frameworks:
                for n in workers:
                    points.append(run_point(framework, n, f"{framework}-w{n}-r{repeat}", out / "runs", launcher,
                                            config_path, measured(n),
                                            [*run_options, *([f"--gpus-per-node={n}"] if gpus else [])]))
                    points[-1].repeat = repeat
        return points
    gbit = {}
    with Testbed.up(max(workers)) as bed:
        for repeat in range(repeats):
            for profile in profiles:
                bed.shape(PROFILES[profile])
                if len(bed.hosts) > 1:
                    gbit.setdefault(profile, []).append(bed.link_gbit())
                for framework in frameworks:
                    for n in workers:
                        points.append(run_on_hosts(bed, profile, framework, n, f"{framework}-{profile}-w{n}-r{repeat}",
                                                   out / "runs", launcher, config_path, measured(n), run_options))
                        points[-1].repeat = repeat
    if links is not None:
        links.update({profile: statistics.median(values) for profile, values in gbit.items()})
    return points
