"""`mnist-dist compare`: TensorFlow vs PyTorch on the same model, data, batch, epochs and threads
(launch.experiments.compare)."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch import log
from launch.cli.common import absolute_path, add_launcher, add_run_option, ensure_data, points_exit_code
from launch.clock import stamp
from launch.cluster.cpus import threads_per_worker
from launch.cluster.world import World
from launch.config import MODELS, add_config_arguments, load_config
from launch.errors import UserError
from launch.frameworks import FRAMEWORKS, Placement, check


def add(commands) -> None:
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
    add_launcher(compare)
    compare.add_argument("--target-accuracy", type=float, default=0.85)
    compare.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="trainings of each model in each framework, interleaved (default 3): a claim is told only "
        "where every run of one framework is beyond every run of the other",
    )
    compare.add_argument("--out", help="comparison folder (default: <log.dir>/compare-<time>)")
    add_run_option(compare, "both `mnist-dist run`s, e.g. --run-option=--gpus-per-node=4")
    add_config_arguments(compare)
    compare.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from launch.experiments.compare import CompareSpec, compare
    from launch.experiments.noise import crowded

    models = _models(args.models)
    if args.repeats < 1:
        raise UserError(f"--repeats {args.repeats}: give at least 1 (3 or more tell noise from a difference)")
    config = load_config(args.config, args.overrides)
    for framework in FRAMEWORKS:
        check(config, framework, Placement(launcher=args.launcher, workers=args.nproc))
    # the same threads in both, written down rather than left to each framework's default
    threads = threads_per_worker(config, World(size=args.nproc, local_size=args.nproc))
    ensure_data(config)
    busy = crowded(threads, args.nproc)
    if busy:
        log.get().warning(f"compare: {busy}")
    spec = CompareSpec(
        models=tuple(models),
        out=Path(args.out or Path(config.log.dir) / f"compare-{stamp()}").resolve(),
        nproc=args.nproc,
        launcher=args.launcher,
        config_path=absolute_path(args.config),
        overrides=(*args.overrides, f"train.threads={threads}"),
        run_options=tuple(args.run_option),
        repeats=args.repeats,
        threads=threads,
    )
    found, points = compare(spec, args.target_accuracy)
    print((spec.out / "compare.md").read_text())
    log.get().info(f"comparison written to {spec.out} (tensorboard --logdir {spec.out / 'runs'})")
    complete = len(found) == len(models) and all(found.values())
    return points_exit_code(points, "compare") or (0 if complete else 1)


def _models(text: str) -> list[str]:
    models = [m for m in text.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise UserError(f"--models {text!r}: choose from {', '.join(MODELS)}, comma-separated")
    return list(dict.fromkeys(models))
