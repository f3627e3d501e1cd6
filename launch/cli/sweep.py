"""`mnist-dist sweep`: throughput and scaling efficiency per framework and world size, optionally
across testbed hosts under network profiles, and held against a baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch import log
from launch.cli.common import absolute_path, add_launcher, add_run_option, ensure_data, points_exit_code
from launch.clock import stamp
from launch.config import add_config_arguments, load_config
from launch.errors import UserError
from launch.jobs import children


def add(commands) -> None:
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
    add_launcher(sweep_cmd)
    sweep_cmd.add_argument("--out", help="sweep folder (default: <log.dir>/sweep-<time>)")
    add_run_option(sweep_cmd, "every `mnist-dist run`, e.g. --run-option=--partition=gpu")
    sweep_cmd.add_argument(
        "--testbed",
        metavar="PROFILE[,PROFILE]",
        help="run across hosts of a testbed on this machine (root; network namespaces), one "
        "worker per host, under each network profile: loopback (unshaped), 10g, 1g, 100m",
    )
    sweep_cmd.add_argument(
        "--forecast",
        action="store_true",
        help="with --testbed: calibrate the forecast (mnist-dist forecast) from the sweep's 1-worker points, "
        "the fastest profile's points and the slowest's 2-worker point, and print its error at every other "
        "point (forecast.md/.png, TensorBoard)",
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
    sweep_cmd.set_defaults(func=command)


def spec_of(args: argparse.Namespace, out: Path):
    """The sweep the arguments ask for (launch.experiments.sweep.check refuses what cannot run)."""
    from launch.experiments import sweep

    return sweep.SweepSpec(
        frameworks=tuple(sweep.parse_list(args.framework)),
        workers=tuple(sweep.parse_list(args.workers, int)),
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


def _held(points, links: dict[str, float], config, out: Path) -> None:
    from launch.cluster.cpus import usable_cpus
    from launch.experiments import held

    checks = held.check(points, held.Bed(links, usable_cpus(), config.train.threads or 1))
    held.write(checks, out)
    print(held.markdown(checks))


def command(args: argparse.Namespace) -> int:
    from launch.experiments import regression, scaling, sweep
    from launch.experiments.noise import load_average
    from launch.forecast.inputs import WIRE_BYTES

    config = load_config(args.config, args.overrides)
    spec = spec_of(args, Path(args.out or Path(config.log.dir) / f"sweep-{stamp()}").resolve())
    sweep.check(spec, config, args.config, tuple(args.overrides))
    baseline = regression.read_baseline(args.baseline) if args.baseline else None  # refused before any run
    if not 0 < args.fail_below <= 10:
        raise UserError(f"--fail-below {args.fail_below}: give a fraction of the baseline, e.g. 0.9")
    if args.forecast and not ({1, 2} <= set(spec.workers) and spec.profiles):
        raise UserError(
            "--forecast calibrates from 1- and 2-worker testbed points: give --testbed PROFILES --workers 1,2,..."
        )
    if args.forecast and config.dist.compression not in WIRE_BYTES:
        raise UserError(
            f"--forecast models the all-reduce of whole gradients; dist.compression={config.dist.compression} "
            "sends low-rank factors: sweep without it, or with none, fp16 or bf16"
        )
    ensure_data(config)
    start = load_average()
    with children.forwarding():
        points, links = sweep.sweep(config, spec, absolute_path(args.config), tuple(args.overrides))
    rows = scaling.scaling_rows(points, args.mode)
    scaling.write_scaling(rows, points, spec.out, scaling.Measured((start, load_average()), spec.repeats, links))
    print((spec.out / "scaling.md").read_text())
    if args.forecast:
        _held(points, links, config, spec.out)
    log.get().info(f"sweep written to {spec.out} (tensorboard --logdir {spec.out / 'tensorboard'})")
    code = points_exit_code(points, "sweep")
    if baseline is None:
        return code
    verdict = regression.judge(rows, baseline, args.fail_below)
    for line in regression.describe(verdict, args.baseline, args.fail_below):
        (log.get().error if line.startswith("below") else log.get().warning)(f"sweep: {line}")
    if not verdict.regressions:
        log.get().info(f"sweep: every matched point at or above {args.fail_below}x the baseline {args.baseline}")
    return code or (1 if verdict.regressions else 0)
