"""Scaling sweeps and framework comparisons: many runs through the normal `mnist-dist run`, one
subprocess each, so a failed point is recorded and the rest go on. The numbers come back from each
run's summary.json; launch.experiments.scaling and .compare turn them into tables, plots and TensorBoard scalars.

With network profiles a sweep runs on a testbed (launch/testbed/hosts.py) instead: N workers are N hosts of
one worker each, `mnist-dist run --hosts node1,...,nodeN --node-rank K` on host K, with every host's
link shaped to the profile; the 1-worker point of each profile is that profile's reference.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from launch import frameworks, log
from launch.atomic_files import append_only
from launch.config import Config, load_config
from launch.errors import UserError
from launch.frameworks import FRAMEWORKS, VARIANTS, Placement
from launch.jobs import children
from launch.outputs.rundir import SUMMARY_FILE
from launch.outputs.summary import Summary, read_summary
from launch.testbed.hosts import PROFILES, Testbed, missing_tools


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
        raise UserError(
            f"strong scaling splits the global batch {config.train.batch_size} over {workers} workers: "
            "choose a train.batch_size divisible by every worker count"
        )
    return config.train.batch_size // workers


@dataclass(frozen=True)
class PointJob:
    """One training of a sweep or comparison, run through `mnist-dist run`."""

    framework: str  # torch, tf, or a variant (launch.frameworks.VARIANTS): horovod
    workers: int
    run_name: str
    log_dir: Path
    launcher: str = "local"
    config_path: str | None = None
    overrides: tuple[str, ...] = ()
    run_options: tuple[str, ...] = ()  # passed to `mnist-dist run`

    def command(self, *placement: str) -> list[str]:
        """`mnist-dist run` for this point (a variant as its framework run its way)."""
        framework, launcher, overrides, options = _variant(self)
        return [
            sys.executable,
            "-m",
            "launch",
            "run",
            "--framework",
            framework,
            "--launcher",
            launcher,
            *placement,
            *options,
            *(["--config", self.config_path] if self.config_path else []),
            *overrides,
            f"log.dir={self.log_dir}",
            f"log.run_name={self.run_name}",
            "log.progress=never",
        ]


@dataclass(frozen=True)
class SweepSpec:
    frameworks: tuple[str, ...]
    workers: tuple[int, ...]
    out: Path
    mode: str = "weak"  # strong keeps the global batch, weak the per-worker batch
    repeats: int = 3
    steps: int = 200  # measured steps per run
    warmup: int = 20
    launcher: str = "local"
    run_options: tuple[str, ...] = ()
    gpus: bool = False  # slurm: one GPU per worker
    profiles: tuple[str, ...] = ()  # testbed network profiles; none: this host alone


def check(spec: SweepSpec, config: Config, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Refuse, before any point runs, a sweep some point of which cannot run."""
    known = (*FRAMEWORKS, *VARIANTS)
    unknown = set(spec.frameworks) - set(known)
    if unknown:
        raise UserError(f"unknown framework(s) {sorted(unknown)}: use {', '.join(known)}")
    if min(spec.workers) < 1 or spec.repeats < 1 or spec.steps < 1:
        raise UserError("--workers, --repeats and --steps must be positive")
    for n in spec.workers:
        per_worker_batch(config, spec.mode, n)  # refuse an indivisible strong-scaling batch up front
    problem = spec.profiles and testbed_problem(spec)
    if problem:
        raise UserError(problem)
    most = max(spec.workers)
    for name in spec.frameworks:
        framework, extra = VARIANTS.get(name, (name, ()))
        launcher = "horovodrun" if extra and spec.launcher in ("local", "torchrun") else spec.launcher
        where = Placement(launcher=launcher, workers=most, gpus_per_node=most if spec.gpus else None)
        frameworks.check(load_config(config_path, [*overrides, *extra]), framework, where)


def testbed_problem(spec: SweepSpec) -> str | None:
    """Why a sweep cannot run these points on a testbed, or None."""
    unknown = [p for p in spec.profiles if p not in PROFILES]
    if unknown:
        return f"unknown network profile(s) {unknown}: use {', '.join(PROFILES)}"
    if spec.launcher not in ("local", "torchrun"):
        return f"--testbed starts one `mnist-dist run` per host: use --launcher local or torchrun, not {spec.launcher}"
    if "horovod" in spec.frameworks:
        return "--testbed runs torch and tf; horovod's launcher starts hosts over ssh, which testbed hosts lack"
    if spec.gpus:
        return "--testbed hosts share this machine's CPUs: drop --gpus"
    return missing_tools()


def _variant(job: PointJob) -> tuple[str, str, list[str], list[str]]:
    """A variant is its framework with overrides, under a launcher that starts its ranks: Horovod's
    own rendezvous for a local start, the mpi template under Slurm; mpirun works as it is."""
    if job.framework not in VARIANTS:
        return job.framework, job.launcher, list(job.overrides), list(job.run_options)
    framework, extra = VARIANTS[job.framework]
    overrides = [*job.overrides, *extra]
    if job.launcher in ("local", "torchrun"):
        return framework, "horovodrun", overrides, list(job.run_options)
    if job.launcher == "slurm":
        return framework, job.launcher, overrides, ["--template", "mpi", *job.run_options]
    return framework, job.launcher, overrides, list(job.run_options)


def run_folder(log_dir: Path, run_name: str) -> Path | None:
    """The run directory a point made: log_dir/run_name, or under Slurm run_name-<job id>; only
    folders of this user's (another could plant one in a shared log_dir)."""
    named = [log_dir / run_name, *sorted(log_dir.glob(f"{run_name}-[0-9]*"))]
    found = [
        p for p in named if (p / SUMMARY_FILE).is_file() and not p.is_symlink() and p.stat().st_uid == os.geteuid()
    ]
    return found[0] if found else None


def _summary(log_dir: Path, run_name: str, code: int) -> Summary | None:
    folder = run_folder(log_dir, run_name)
    summary = read_summary(folder / SUMMARY_FILE) if code == 0 and folder else None
    if summary is None:
        log.get().info(f"{run_name} failed (exit code {code}); the sweep goes on")
    return summary


def run_point(job: PointJob) -> Point:
    """One training through `mnist-dist run`; its output streams through, its summary is read back."""
    placement = ["--nproc", str(job.workers), *(["--wait"] if job.launcher == "slurm" else [])]
    log.get().info(f"{job.framework} x{job.workers}: {job.run_name}")
    code = children.wait(children.popen(job.command(*placement)))
    return Point(job.framework, job.workers, 0, job.run_name, code, _summary(job.log_dir, job.run_name, code))


def run_on_hosts(bed: Testbed, profile: str, job: PointJob) -> Point:
    """One training across the testbed's first `job.workers` hosts, one worker each. Host node1's output
    streams through; the others' goes to <log_dir>/<run_name>-<host>.log. When one host's run fails the
    others are stopped, and no process outlives the point."""
    hosts = [h.name for h in bed.hosts[: job.workers]]
    log.get().info(f"{job.framework} on {job.workers} host(s), {profile}: {job.run_name}")
    job.log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for rank, host in enumerate(hosts):
            placement = ["--hosts", ",".join(hosts), "--node-rank", str(rank)] if job.workers > 1 else []
            command = bed.command(host, job.command(*placement))
            if rank == 0:
                procs.append(children.popen(command))
            else:
                with append_only(_host_log(job, host)) as out:
                    procs.append(children.popen(command, stdout=out, stderr=subprocess.STDOUT))
        code = _wait_for_hosts(job, procs, hosts)
    finally:
        for host in hosts:
            bed.kill_host(host)
        for proc in procs:
            proc.wait()
    return Point(job.framework, job.workers, 0, job.run_name, code, _summary(job.log_dir, job.run_name, code), profile)


def _host_log(job: PointJob, host: str) -> Path:
    return job.log_dir / f"{job.run_name}-{host}.log"


def _wait_for_hosts(job: PointJob, procs: list[subprocess.Popen], hosts: list[str]) -> int:
    """0 when every host's run succeeded, else the first failure's code (said with its log)."""
    for proc, host in zip(procs, hosts):
        code = proc.wait()
        if code:
            where = f" (its log: {_host_log(job, host)})" if host != hosts[0] else ""
            log.get().info(f"{job.run_name}: the run on {host} exited with code {code}{where}")
            return code
    return 0


def _measured(config: Config, spec: SweepSpec, overrides: tuple[str, ...], workers: int) -> tuple[str, ...]:
    """A point's overrides: warm-up + steps, no checkpoints."""
    return (
        *overrides,
        f"train.batch_size={per_worker_batch(config, spec.mode, workers)}",
        f"train.warmup_steps={spec.warmup}",
        f"train.max_steps={spec.warmup + spec.steps}",
        "train.epochs=1000000",
        "checkpoint.interval=0",
    )


def sweep(
    config: Config, spec: SweepSpec, config_path: str | None, overrides: tuple[str, ...]
) -> tuple[list[Point], dict[str, float]]:
    """Every (profile, framework, world size, repeat), each for warm-up + steps steps; repeats interleave,
    and so do profiles inside a repeat (a noisy minute hits them all). With profiles the points run on a
    testbed of max(workers) hosts, made here and removed at the end. Returns the points and each
    profile's measured node1 -> node2 Gbit/s."""

    def job(framework: str, n: int, name: str) -> PointJob:
        options = [*spec.run_options, *([f"--gpus-per-node={n}"] if spec.gpus and not spec.profiles else [])]
        return PointJob(
            framework,
            n,
            name,
            spec.out / "runs",
            spec.launcher,
            config_path,
            _measured(config, spec, overrides, n),
            tuple(options),
        )

    points = []
    if not spec.profiles:
        for repeat, framework, n in _grid(spec):
            if children.stopped_by():
                break
            points.append(replace(run_point(job(framework, n, f"{framework}-w{n}-r{repeat}")), repeat=repeat))
        return points, {}
    gbit: dict[str, list[float]] = {}
    with Testbed.up(max(spec.workers)) as bed:
        for repeat in range(spec.repeats):
            for profile in spec.profiles:
                if children.stopped_by():
                    break
                bed.shape(PROFILES[profile])
                if len(bed.hosts) > 1:
                    gbit.setdefault(profile, []).append(bed.link_gbit(megabytes=_probe_megabytes(PROFILES[profile])))
                for _, framework, n in _grid(replace(spec, repeats=1)):
                    if children.stopped_by():
                        break
                    point = run_on_hosts(bed, profile, job(framework, n, f"{framework}-{profile}-w{n}-r{repeat}"))
                    points.append(replace(point, repeat=repeat))
    return points, {profile: statistics.median(values) for profile, values in gbit.items()}


def _probe_megabytes(rate: str | None) -> int:
    """What the link's TCP probe sends: 400 MB, or two seconds' worth of a slower link."""
    if rate is None or not rate.endswith("mbit"):
        return 400
    return min(400, int(rate.removesuffix("mbit")) * 2 // 8)


def _grid(spec: SweepSpec):
    for repeat in range(spec.repeats):
        for framework in spec.frameworks:
            for n in spec.workers:
                yield repeat, framework, n
