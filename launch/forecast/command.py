"""`mnist-dist forecast`: images/s and scaling efficiency at 1 ... 1024 workers, from a calibration
(run folders, an allocation's doctor.json) or stated hardware and model, and the link bandwidth each
N needs for a target efficiency."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch import log
from launch.clock import stamp
from launch.errors import UserError

WORKERS = ",".join(str(2**k) for k in range(11))  # 1 ... 1024


def add(commands) -> None:
    cmd = commands.add_parser(
        "forecast",
        help="predicted images/s and scaling efficiency at 1 ... 1024 workers, and the link a target needs",
        description="Forecast weak and strong scaling from measured runs (each framework's 1-worker run gives "
        "its compute; a run of several workers calibrates the link it crossed) or from stated hardware and "
        "model. Prints every input with its source, writes forecast.md/.csv/.png and TensorBoard scalars "
        "scaling/images_per_sec and scaling/efficiency (step = workers; run forecast-<name>). The model and "
        "its sources: docs/performance.md.",
    )
    cmd.add_argument("runs", nargs="*", metavar="RUN", help="run folders (or their summary.json) to calibrate from")
    cmd.add_argument("--doctor", metavar="PATH", help="the allocation's doctor folder or doctor.json: its links")
    cmd.add_argument("--workers", default=WORKERS, help=f"comma-separated worker counts (default {WORKERS})")
    cmd.add_argument("--global-batch", type=int, default=0, help="strong scaling's (default: 32 x the batch)")
    cmd.add_argument("--target", type=float, default=0.9, help="efficiency to find the link for (default 0.9)")
    cmd.add_argument("--faster", type=float, default=2.0, help="say what a device N x faster changes (default 2)")
    cmd.add_argument(
        "--accuracy", type=float, help="with --accuracy-runs: the eval accuracy to forecast the time to, e.g. 0.85"
    )
    cmd.add_argument(
        "--accuracy-runs",
        nargs="+",
        default=[],
        metavar="RUN",
        help="finished runs at several global batches (k workers, or one process with train.accumulate_steps=k "
        "and k workers' lr): the epochs each took to --accuracy",
    )
    cmd.add_argument("--out", help="folder for the files (default: runs/forecast-<time>)")
    stated = cmd.add_argument_group(
        "stated hardware and model (the hardware's options replace what runs measured; the model's are for no runs)"
    )
    stated.add_argument("--name", default="stated", help="the stated model's name in the report")
    stated.add_argument("--parameters", type=float, help="the model's parameters (fp32 gradients)")
    stated.add_argument("--gradient-mb", type=float, help="or the bytes a step's all-reduce sends, in MB")
    stated.add_argument("--compute-ms", type=float, help="one worker's step (forward, backward, update) in ms")
    stated.add_argument("--batch", type=int, help="the per-worker batch --compute-ms was measured at")
    stated.add_argument("--per-node", type=int, help="workers (GPUs) per node")
    stated.add_argument("--inter-gbit", type=float, help="each node's link to the others, Gbit/s")
    stated.add_argument("--intra-gbit", type=float, help="between the workers of one node, Gbit/s per worker")
    stated.add_argument("--inter-latency-us", type=float, help="between nodes, per message (default 10)")
    stated.add_argument("--intra-latency-us", type=float, help="inside a node, per message (default 1)")
    stated.add_argument("--overlap", type=float, help="γ in [1, 10]: 1 no overlap of all-reduce and backward")
    stated.add_argument("--fixed-fraction", type=float, help="share of compute that does not grow with the batch")
    cmd.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from launch.forecast import accuracy, inputs, report

    question = report.Question(_workers(args.workers), args.global_batch, args.target, args.faster, args.accuracy)
    _check(args)
    reached = accuracy.read([Path(r) for r in args.accuracy_runs], args.accuracy) if args.accuracy else []
    stated = inputs.Stated(
        **{k: getattr(args, k) for k in inputs.Stated.__dataclass_fields__ if getattr(args, k, None) is not None}
    )
    if args.runs:
        cals = inputs.from_runs([Path(r) for r in args.runs], Path(args.doctor) if args.doctor else None, stated)
    else:
        cals = [inputs.from_stated(stated)]
    forecasts = report.run(cals, question, reached)
    out = Path(args.out or f"runs/forecast-{stamp()}")
    report.write(forecasts, question, out)
    print(report.markdown(forecasts, question))
    log.get().info(f"forecast written to {out} (tensorboard --logdir {out / 'tensorboard'})")
    return 0


def _workers(text: str) -> list[int]:
    try:
        workers = sorted({int(w) for w in text.split(",") if w.strip()})
    except ValueError:
        raise UserError(f"--workers {text}: give comma-separated whole numbers, e.g. 1,8,64,512") from None
    if not workers or workers[0] < 1:
        raise UserError(f"--workers {text}: give counts of 1 or more")
    return workers


def _check(args: argparse.Namespace) -> None:
    model = [
        f"--{n.replace('_', '-')}" for n in ("parameters", "gradient_mb", "compute_ms", "batch") if getattr(args, n)
    ]
    if args.runs and model:
        raise UserError(f"{' '.join(model)} describe a stated model: give them without run folders, or the runs alone")
    if not 0 < args.target < 1:
        raise UserError(f"--target {args.target}: give an efficiency between 0 and 1, e.g. 0.9")
    if (args.accuracy is None) != (not args.accuracy_runs):
        raise UserError("--accuracy and --accuracy-runs go together: the target, and the runs that reached it")
    if args.accuracy is not None and not 0 < args.accuracy < 1:
        raise UserError(f"--accuracy {args.accuracy}: give an eval accuracy between 0 and 1, e.g. 0.85")
    if args.faster <= 0:
        raise UserError(f"--faster {args.faster}: give a positive factor, e.g. 2")
    if args.overlap is not None and not 1 <= args.overlap <= 10:
        raise UserError(f"--overlap {args.overlap}: γ is between 1 (no overlap) and 10 (nearly full)")
    if args.fixed_fraction is not None and not 0 <= args.fixed_fraction < 1:
        raise UserError(f"--fixed-fraction {args.fixed_fraction}: give a share in [0, 1)")
    for name in ("parameters", "gradient_mb", "compute_ms", "batch", "per_node", "inter_gbit", "intra_gbit"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} {value}: give a positive number")
