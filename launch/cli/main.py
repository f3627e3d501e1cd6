"""The `mnist-dist` command (also `python -m launch`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from launch import __version__, log
from launch.clock import stamp
from launch.cluster.cpus import threads_per_worker
from launch.cluster.world import World
from launch.config import MODELS, Config, add_config_arguments, load_config
from launch.data.datasets import MIRRORS, load_files, locate
from launch.errors import UserError, report_and_exit
from launch.frameworks import FRAMEWORKS, LAUNCHERS, VARIANTS, Placement, check
from launch.jobs import children, launchers, slurm
from launch.jobs.jobspec import JobSpec, SlurmOptions, default_run_prefix
from launch.outputs.rundir import HISTORY_FILE, SUMMARY_FILE
from launch.testbed import hosts as testbed

PROG = "mnist-dist"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Data-parallel MNIST training for TensorFlow and PyTorch: launch, prepare data, measure scaling.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands_in_order = (_add_data, _add_config, _add_run, _add_doctor, _add_sweep, _add_compare, _add_diff)
    for add in (*commands_in_order, _add_slurm, _add_testbed):
        add(commands)
    return parser


def _add_data(commands) -> None:
    data = commands.add_parser(
        "data",
        help="find or download a dataset, verify it, print where it is",
        description="Prepare a dataset once (say on a login node with internet) so that compute "
        "nodes find it offline. Lookup: --dir, the cache ($MNIST_DIST_DATA), system packages "
        "(Debian's dataset-fashion-mnist), then the public mirrors (SHA-256 verified).",
    )
    data.add_argument("--dataset", choices=sorted(MIRRORS), required=True)
    data.add_argument("--dir", help="folder to look in first and to download into")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    data.set_defaults(func=cmd_data)


def _add_config(commands) -> None:
    config = commands.add_parser(
        "config",
        help="validate a config with overrides and print it resolved",
        description="Print the config a run would use: defaults, then --config, then overrides. With "
        "--framework (and --launcher, --nproc), also check that the framework can run it that way.",
    )
    config.add_argument("--framework", choices=sorted(FRAMEWORKS))
    config.add_argument("--launcher", choices=LAUNCHERS)
    config.add_argument("--nproc", type=int, default=1, help="workers in all (default 1)")
    add_config_arguments(config)
    config.set_defaults(func=cmd_config)


def _add_run(commands) -> None:
    run = commands.add_parser(
        "run",
        help="start N workers of either framework: local processes, torchrun, mpirun or Slurm",
        description="Start a training. local/torchrun/mpirun start this node's workers and stream their "
        "output (rank 0 as is, other ranks prefixed); slurm renders an sbatch script from slurm/ and "
        "submits it. --dry-run prints the command or script and the per-rank plan, starting nothing.",
    )
    add_run_arguments(run)
    run.add_argument("--launcher", choices=LAUNCHERS, default="local")
    run.set_defaults(func=cmd_run)


def _add_doctor(commands) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check an allocation: each rank's host, names, interface, CPUs, GPUs and clock; every link; all-reduce",
        description="Start ranks as `run` does (the same launch options) that report their host, how it "
        "resolves every node's name, the interface towards the master, their CPUs, GPUs and clock against "
        "rank 0; then measure a node x node TCP bandwidth and round-trip matrix and an all-reduce sweep "
        "(gloo; NCCL where every rank has a GPU; then, where TensorFlow is installed, its collective as "
        "tf_dist trains with it, a second part under the same launcher). Prints the matrix and the "
        "findings, each naming its hosts, writes doctor.json and doctor.md to <log.dir>/doctor-<time> "
        "(or log.run_name) and exits 1 when there is a finding. train.threads is the CPUs each rank "
        "should have (default 1).",
    )
    add_run_arguments(doctor, framework=False)
    doctor.add_argument("--launcher", choices=LAUNCHERS, default="local")
    doctor.set_defaults(func=cmd_doctor, framework="torch")


def _add_sweep(commands) -> None:
    sweep_cmd = commands.add_parser(
        "sweep",
        help="throughput and scaling efficiency per framework and world size",
        description="Run each (framework, workers) point through `mnist-dist run` for warm-up + a fixed "
        "number of measured steps, R times, and write scaling.md/.csv/.png and TensorBoard scalars "
        "scaling/images_per_sec and scaling/efficiency (step = workers; one TensorBoard run per framework, "
        "per framework and network profile with --testbed, e.g. torch-1g).",
    )
    sweep_cmd.add_argument(
        "--framework", default="torch,tf", help="comma-separated: torch, tf, horovod (torch_dist with Horovod)"
    )
    sweep_cmd.add_argument("--workers", default="1,2", help="comma-separated world sizes, e.g. 1,2,4")
    sweep_cmd.add_argument(
        "--mode",
        choices=("strong", "weak"),
        default="weak",
        help="strong keeps the global batch (train.batch_size), weak the per-worker batch",
    )
    sweep_cmd.add_argument("--repeats", type=int, default=3)
    sweep_cmd.add_argument("--steps", type=int, default=200, help="measured steps per run")
    sweep_cmd.add_argument("--warmup", type=int, default=20)
    sweep_cmd.add_argument("--launcher", choices=LAUNCHERS, default="local")
    sweep_cmd.add_argument("--out", help="sweep folder (default: <log.dir>/sweep-<time>)")
    sweep_cmd.add_argument(
        "--run-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="passed to every `mnist-dist run`, e.g. --run-option=--partition=gpu",
    )
    sweep_cmd.add_argument(
        "--testbed",
        metavar="PROFILE[,PROFILE]",
        help="run across hosts of a testbed on this machine (root; network namespaces), one "
        "worker per host, under each network profile: loopback (unshaped), 10g, 1g",
    )
    sweep_cmd.add_argument(
        "--gpus", action="store_true", help="slurm: give each point one GPU per worker (--gpus-per-node = workers)"
    )
    sweep_cmd.add_argument(
        "--baseline", metavar="CSV", help="an earlier sweep's scaling.csv: exit 1 if a point fell below --fail-below"
    )
    sweep_cmd.add_argument(
        "--fail-below",
        type=float,
        default=0.9,
        metavar="RATIO",
        help="with --baseline: the lowest throughput and efficiency, as a fraction of the baseline's (default 0.9)",
    )
    add_config_arguments(sweep_cmd)
    sweep_cmd.set_defaults(func=cmd_sweep)


def _add_compare(commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="TensorFlow vs PyTorch on the same model, data, batch, epochs and threads",
        description="Train the same config in both frameworks and write compare.md and compare.png: "
        "throughput, time to a target accuracy, final accuracy, peak RSS, model size, startup time, and "
        "a verdict from the numbers on each classic claim.",
    )
    compare.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"models to compare, each trained in both frameworks (default {','.join(MODELS)}): "
        "a claim can hold for one and not the other",
    )
    compare.add_argument("--nproc", type=int, default=1, help="workers per framework (default 1)")
    compare.add_argument("--launcher", choices=LAUNCHERS, default="local")
    compare.add_argument("--target-accuracy", type=float, default=0.85)
    compare.add_argument("--out", help="comparison folder (default: <log.dir>/compare-<time>)")
    compare.add_argument(
        "--run-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="passed to both `mnist-dist run`s, e.g. --run-option=--gpus-per-node=4",
    )
    add_config_arguments(compare)
    compare.set_defaults(func=cmd_compare)


def _add_slurm(commands) -> None:
    slurm_cmd = commands.add_parser("slurm", help="submit to Slurm, or show a job's state")
    slurm_sub = slurm_cmd.add_subparsers(dest="slurm_command", required=True, metavar="SUBCOMMAND")
    submit = slurm_sub.add_parser("submit", help="the same as `run --launcher slurm`")
    add_run_arguments(submit)
    submit.set_defaults(func=cmd_run, launcher="slurm")
    status = slurm_sub.add_parser("status", help="print a job's state, exit code and log file")
    status.add_argument("job_id")
    status.set_defaults(func=cmd_slurm_status)


def _add_diff(commands) -> None:
    diff = commands.add_parser(
        "diff",
        help="what differs between two runs, and their throughput and accuracy side by side",
        description="Print two runs' throughput and accuracy with their ratio, then every config key, run "
        "fact (framework, backend, world size, nodes, ...), launch variable (NCCL_*, GLOO_*, TF_*, OMPI_MCA_*, "
        "SLURM_*, MASTER_*, ...), version and host that differs.",
    )
    diff.add_argument("run_a", metavar="RUN_A", help="a run directory or its summary.json")
    diff.add_argument("run_b", metavar="RUN_B", help="a run directory or its summary.json")
    diff.set_defaults(func=cmd_diff)


def _add_testbed(commands) -> None:
    bed = commands.add_parser(
        "testbed",
        help="hosts on this machine (network namespaces) to try multi-host runs; needs root",
        description="Make N hosts on this machine, each a network namespace with its own address, hostname "
        "and hosts file on a private bridge, optionally with shaped links; run commands on them; remove "
        "them. `sweep --testbed` makes its own.",
    )
    testbed.add_arguments(bed)
    bed.set_defaults(func=testbed.command)


def add_run_arguments(parser: argparse.ArgumentParser, framework: bool = True) -> None:
    if framework:
        parser.add_argument("--framework", choices=sorted(FRAMEWORKS), required=True)
    parser.add_argument("--nproc", type=int, default=1, help="workers per node (default 1)")
    parser.add_argument(
        "--nodes",
        type=_node_count,
        metavar="N|MIN:MAX",
        help="nodes (default: as many as --hosts names, else 1); a range MIN:MAX runs elastic "
        "(torchrun, Slurm): a run that loses nodes goes on with at least MIN",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would start; start nothing")
    local = parser.add_argument_group("local, torchrun and mpirun")
    local.add_argument("--node-rank", type=int, default=0, help="this node's index with --nodes > 1")
    local.add_argument(
        "--hosts",
        type=lambda text: [h for h in text.split(",") if h],
        default=[],
        metavar="HOST,HOST,...",
        help="every node's host name in node-rank order, the same on every "
        "node: TensorFlow needs them (TF_CONFIG), mpirun starts its ranks there",
    )
    local.add_argument("--master-addr", help="rank 0's host (default: the first of --hosts; needed with --nodes > 1)")
    local.add_argument("--master-port", type=int, help="rendezvous port (default: a free one)")
    local.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart every worker from the latest checkpoint after a failure, up to N times "
        "(torchrun's own for torch under torchrun; adds checkpoint.resume=true)",
    )
    _add_slurm_arguments(parser.add_argument_group("slurm"))
    add_config_arguments(parser)


def _add_slurm_arguments(job) -> None:
    job.add_argument("--template", choices=slurm.TEMPLATES, help="sbatch template (default: the framework's)")
    job.add_argument("--gpus-per-node", type=int, default=0)
    job.add_argument("--cpus-per-task", type=int)
    job.add_argument("--time", default="01:00:00")
    job.add_argument("--partition")
    job.add_argument("--account")
    job.add_argument("--job-name", default="mnist-dist")
    job.add_argument("--output", help="job log (default: <log.dir>/slurm-%%j.out)")
    job.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option, e.g. --sbatch=--qos=high (repeatable)",
    )
    job.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run before the workers, e.g. 'module load cuda' (repeatable)",
    )
    job.add_argument(
        "--mpi-launcher",
        choices=("mpirun", "srun"),
        default="mpirun",
        help="mpi template: mpirun inside the allocation, or srun --mpi=pmix",
    )
    job.add_argument(
        "--preempt-signal",
        default="USR1@60",
        metavar="SIG@SECONDS",
        help="Slurm's warning signal before preemption or the time limit: checkpoint, then requeue",
    )
    job.add_argument("--wait", action="store_true", help="follow the job to its end and exit with its exit code")


def job_spec(args: argparse.Namespace, config: Config) -> JobSpec:
    """The job the run arguments ask for (the arguments themselves stay as parsed)."""
    min_nodes, nodes = args.nodes or (len(args.hosts) or 1,) * 2
    overrides = [*args.overrides, *(["checkpoint.resume=true"] if args.max_restarts else [])]
    log_dir = str(Path(config.log.dir).resolve()) if args.launcher == "slurm" else config.log.dir
    if args.launcher == "slurm":
        overrides.append(f"log.dir={log_dir}")
    slurm_options = SlurmOptions(
        template=args.template,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name,
        output=args.output or str(Path(log_dir) / "slurm-%j.out"),
        extra_sbatch=tuple(args.sbatch),
        setup=tuple(args.setup),
        mpi_launcher=args.mpi_launcher,
        preempt_signal=args.preempt_signal,
    )
    return JobSpec(
        framework=args.framework,
        launcher=args.launcher,
        nproc=args.nproc,
        nodes=nodes,
        min_nodes=min_nodes,
        node_rank=args.node_rank,
        hosts=tuple(args.hosts),
        master_addr=args.master_addr or (args.hosts[0] if args.hosts else "127.0.0.1"),
        master_port=args.master_port,
        config_path=_abs(args.config),
        overrides=tuple(overrides),
        max_restarts=args.max_restarts,
        threads=threads_per_worker(config, World(local_size=args.nproc)),
        log_dir=log_dir,
        slurm=slurm_options,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from launch.doctor import parts as doctor

    if args.launcher == "horovodrun":
        raise UserError("mnist-dist doctor runs under local, torchrun, mpirun and slurm: pick one of those")
    config = load_config(args.config, args.overrides)
    name = config.log.run_name or f"doctor-{stamp()}"
    if args.launcher != "slurm":
        args.overrides = [*args.overrides, f"log.run_name={name}"]
    spec = dataclasses.replace(job_spec(args, config), max_restarts=0)
    if args.dry_run:
        for part in doctor.parts(spec):
            if spec.launcher == "slurm":
                print(slurm.render(part, "doctor", Path(spec.log_dir)))
            else:
                _print_dry_run(launchers.plan(part))
        return 0
    return doctor.run(spec, name)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)  # a bad config fails here, before anything starts
    spec = job_spec(args, config)
    check(config, spec.framework, spec.placement())
    if spec.launcher == "slurm":
        return _submit(spec, config, args)
    if spec.max_restarts and spec.launcher not in ("local", "torchrun"):
        raise UserError(
            f"--max-restarts works with the local and torchrun launchers; under {spec.launcher} "
            "restart the job (Slurm jobs requeue themselves on preemption)"
        )
    if spec.max_restarts and spec.nodes > 1 and not config.log.run_name:
        raise UserError(
            "--max-restarts across nodes needs log.run_name=NAME, the same on every node: restarted "
            "workers find the run's checkpoints by it"
        )
    result = launchers.plan(spec)
    if args.dry_run:
        _print_dry_run(result)
        return 0
    launchers.preflight(spec.launcher, spec.framework)
    _ensure_data(config)
    for note in result.notes:
        log.get().info(note)
    return launchers.run_plan(result, spec.max_restarts)


def _print_dry_run(result: launchers.Plan) -> None:
    lines = [(result.command, result.env)] if result.command else result.per_rank
    _print_plan("\n".join(_shell_line(cmd, env) for cmd, env in lines), result)


def _submit(spec: JobSpec, config: Config, args: argparse.Namespace) -> int:
    prefix = default_run_prefix(spec, config)
    script = slurm.render(spec, prefix, Path(spec.log_dir))
    if args.dry_run:
        result = launchers.Plan(spec.framework, launchers.slurm_worlds(spec))
        result.notes.append("nodes are shown as node0..; the port is derived from the job id (shown for job id 0)")
        _print_plan(script, result)
        return 0
    launchers.preflight("slurm", spec.framework)
    _ensure_data(config)
    folder = Path(spec.log_dir) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    script_path = folder / f"{prefix}-{stamp()}.sbatch"
    script_path.write_text(script)
    job = slurm.submit(script_path)
    print(
        f"submitted job {job}\n  script:  {script_path}\n  log:     {spec.slurm.output.replace('%j', job)}\n"
        f"  run dir: {Path(spec.log_dir) / f'{prefix}-{job}'}",
        flush=True,
    )
    if not args.wait:
        return 0
    info = slurm.wait(job)
    print(f"job {job} {info.get('JobState')} with exit code {info.get('ExitCode')}", flush=True)
    summary = Path(spec.log_dir) / f"{prefix}-{job}" / SUMMARY_FILE
    if slurm.exit_code(info) == 0 and not summary.is_file():  # e.g. srun exits 0 when no rank started
        log.get().error(f"job {job} left no {summary}: it did not train the run; its log says why")
        return 1
    return slurm.exit_code(info)


def _node_count(text: str) -> tuple[int, int]:
    """--nodes N or MIN:MAX (torchrun's --nnodes form) as (min, max)."""
    low, _, high = text.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node count N or a range MIN:MAX, e.g. 2 or 1:2") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: nodes must be at least 1, and MIN at most MAX")
    return bounds


def cmd_slurm_status(args: argparse.Namespace) -> int:
    info = slurm.job_info(args.job_id)
    for key in ("JobId", "JobName", "JobState", "ExitCode", "RunTime", "NodeList", "StdOut"):
        print(f"{key:9} {info.get(key, '')}")
    return 0


def sweep_spec(args: argparse.Namespace, config: Config):
    """The sweep the arguments ask for, checked before any point runs."""
    from launch.experiments import sweep

    frameworks = tuple(sweep.parse_list(args.framework))
    known = (*FRAMEWORKS, *VARIANTS)
    unknown = set(frameworks) - set(known)
    if unknown:
        raise UserError(f"unknown framework(s) {sorted(unknown)}: use {', '.join(known)}")
    workers = tuple(sweep.parse_list(args.workers, int))
    if min(workers) < 1 or args.repeats < 1 or args.steps < 1:
        raise UserError("--workers, --repeats and --steps must be positive")
    out = Path(args.out or Path(config.log.dir) / f"sweep-{stamp()}").resolve()
    spec = sweep.SweepSpec(
        frameworks=frameworks,
        workers=workers,
        out=out,
        mode=args.mode,
        repeats=args.repeats,
        steps=args.steps,
        warmup=args.warmup,
        launcher=args.launcher,
        run_options=tuple(args.run_option),
        gpus=args.gpus,
        profiles=tuple(sweep.parse_list(args.testbed)) if args.testbed is not None else (),
    )
    for n in workers:
        sweep.per_worker_batch(config, args.mode, n)  # refuse an indivisible strong-scaling batch up front
    problem = spec.profiles and sweep.testbed_problem(spec)
    if problem:
        raise UserError(problem)
    for name in frameworks:
        framework, extra = VARIANTS.get(name, (name, ()))
        launcher = "horovodrun" if extra and args.launcher in ("local", "torchrun") else args.launcher
        check(
            load_config(args.config, [*args.overrides, *extra]),
            framework,
            Placement(launcher=launcher, workers=max(workers), gpus_per_node=max(workers) if args.gpus else None),
        )
    return spec


def cmd_sweep(args: argparse.Namespace) -> int:
    from launch.experiments import gate, report, sweep

    config = load_config(args.config, args.overrides)
    spec = sweep_spec(args, config)
    baseline = gate.read_baseline(args.baseline) if args.baseline else None  # refused before any run
    if not 0 < args.fail_below <= 10:
        raise UserError(f"--fail-below {args.fail_below}: give a fraction of the baseline, e.g. 0.9")
    _ensure_data(config)
    with children.forwarding():
        points, links = sweep.sweep(config, spec, _abs(args.config), tuple(args.overrides))
    rows = report.scaling_rows(points, args.mode)
    report.write_scaling(rows, points, spec.out, links)
    print((spec.out / "scaling.md").read_text())
    log.get().info(f"sweep written to {spec.out} (tensorboard --logdir {spec.out / 'tensorboard'})")
    code = _verdict(points, "sweep")
    if baseline is None:
        return code
    verdict = gate.judge(rows, baseline, args.fail_below)
    for line in gate.describe(verdict, args.baseline, args.fail_below):
        (log.get().error if line.startswith("below") else log.get().warning)(f"sweep: {line}")
    if not verdict.regressions:
        log.get().info(f"sweep: every matched point at or above {args.fail_below}x the baseline {args.baseline}")
    return code or (1 if verdict.regressions else 0)


def _verdict(points, command: str) -> int:
    """0 only when every point ran and succeeded; else one line naming the failed ones."""
    failed = [f"{p.run_name} (exit code {p.exit_code})" for p in points if not p.ok]
    stop = children.stopped_by()
    if stop:
        log.get().error(f"{command} stopped by {signal.Signals(stop).name} after {len(points)} point(s)")
        return 128 + stop
    if failed:
        log.get().error(f"{command}: {len(failed)} of {len(points)} point(s) failed: {', '.join(failed)}")
        return 1
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from launch.experiments.diff import load_run, render

    print(render(load_run(args.run_a), load_run(args.run_b)), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from launch.experiments import report
    from launch.experiments.hparams import Session, write_views

    models = _models(args.models)
    config = load_config(args.config, args.overrides)
    out = Path(args.out or Path(config.log.dir) / f"compare-{stamp()}").resolve()
    for framework in FRAMEWORKS:
        check(config, framework, Placement(launcher=args.launcher, workers=args.nproc))
    # the same threads in both, written down rather than left to each framework's default
    threads = threads_per_worker(config, World(size=args.nproc, local_size=args.nproc))
    _ensure_data(config)
    compared, points = {}, []
    for model in models:
        compared[model] = _compare_model(args, model, (*args.overrides, f"train.threads={threads}"), out, points)
        if children.stopped_by():
            break
    found = report.write_comparison(compared, args.target_accuracy, args.launcher, out)
    write_views(out / "runs", [Session(p.run_name, p.summary) for p in points if p.ok])
    print((out / "compare.md").read_text())
    log.get().info(f"comparison written to {out} (tensorboard --logdir {out / 'runs'})")
    complete = len(found) == len(models) and all(found.values())
    return _verdict(points, "compare") or (0 if complete else 1)


def _models(text: str) -> list[str]:
    models = [m for m in text.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise UserError(f"--models {text!r}: choose from {', '.join(MODELS)}, comma-separated")
    return list(dict.fromkeys(models))


def _compare_model(args: argparse.Namespace, model: str, overrides: tuple[str, ...], out: Path, points: list):
    """One model in both frameworks (run `<framework>-<model>`); its points are added to `points`."""
    from launch.experiments import report, sweep

    compared = report.Compared()
    for framework in FRAMEWORKS:
        if children.stopped_by():
            break  # a stop during the last point ends the comparison
        name = f"{framework}-{model}"
        job = sweep.PointJob(
            framework,
            args.nproc,
            name,
            out / "runs",
            args.launcher,
            _abs(args.config),
            (*overrides, f"model.name={model}"),
            tuple(args.run_option),
        )
        with children.forwarding():
            point = sweep.run_point(job)
        points.append(point)
        if point.ok:
            run_dir = next(p.parent for p in (out / "runs").glob(f"{name}*/{HISTORY_FILE}"))
            compared.runs[framework] = point.summary
            compared.histories[framework] = json.loads((run_dir / HISTORY_FILE).read_text())["epochs"]
            compared.reloaded[framework] = _reload(framework, next(run_dir.glob("model.*")))
    return compared


def _reload(framework: str, model: Path) -> int | str:
    """The parameter count of a saved model reloaded in a fresh process, or why it did not reload."""
    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORKS[framework].reload_model, str(model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return f"{model.name} did not reload: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    return int(result.stdout.split()[-1])


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _shell_line(command: list[str], env: dict[str, str]) -> str:
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()] + [shlex.quote(c) for c in command])


def _print_plan(command: str, result: launchers.Plan) -> None:
    print(command)
    print()
    for note in result.notes:
        print(f"# {note}")
    print(result.table())


def _ensure_data(config: Config) -> None:
    """Put the dataset on disk once, here, before N ranks start (and possibly race to download it),
    and check it: a wrong or broken file is one line here, not one per rank inside a launcher's output."""
    if config.data.dataset != "synthetic":
        data = load_files(config.data.dataset, locate(config.data.dataset, config.data.dir), config.data.custom)
        log.get().info(f"{config.data.dataset} data at {data.source} ({data.check})")


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    config = load_config(args.config, args.overrides)
    if args.framework:
        check(config, args.framework, Placement(launcher=args.launcher, workers=args.nproc))
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    files = locate(args.dataset, args.dir, download=not args.no_download)
    data = load_files(args.dataset, files)
    print(f"{args.dataset}: {data.source}")
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        counts = np.bincount(labels, minlength=10)
        print(
            f"  {split}: {len(images)} images {images.shape[1]}x{images.shape[2]} {images.dtype}, "
            f"labels per class {counts.min()}..{counts.max()}"
        )
    for path in files.values() if isinstance(files, dict) else [files]:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    log.setup(PROG)
    try:
        code = args.func(args)
    except UserError as exc:
        report_and_exit(exc)
    sys.exit(code)
