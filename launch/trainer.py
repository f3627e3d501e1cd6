"""What both trainers do the same way, outside the framework: arguments, threads, the epoch record,
the accuracy/loss figure, the progress bar, the log line and the summary.

The trainers (`torch_dist.train`, `tf_dist.train`) keep only what needs their framework: tensors,
models, steps, collectives and checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from launch.config import Config, load_config
from launch.metrics import combine_rates
from launch.summary import Summary, versions
from launch.world import World, detect_world

# Columns of the row each rank contributes at the end of the run.
FINAL_ROW = ("images", "seconds", "steps", "peak_rss")

PROCESS_START = time.time()  # close to interpreter start: imported before the frameworks


def parse_trainer_args(prog: str, argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    from launch.cli import add_config_arguments

    parser = argparse.ArgumentParser(prog=prog, description="Train an MNIST model data-parallel. "
                                     "Rank and world size come from the launcher's environment.")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides), args


def main(prog: str, train: Callable[[Config, World], int], argv: list[str] | None = None) -> None:
    """A trainer's entry point: config, world, train, exit code. Every failure is one line on stderr
    that names this rank and host: a user error with its fix, or a framework's exception by its type
    and cause (launch.errors.describe; the traceback with MNIST_DIST_TRACEBACK=1)."""
    from launch.errors import UserError, describe, report_and_exit

    world = None
    try:
        config, _ = parse_trainer_args(prog, argv)
        world = detect_world()
        code = train(config, world)
    except UserError as exc:
        report_and_exit(prog, exc, _rank_and_host(world))
    except Exception as exc:
        if os.environ.get("MNIST_DIST_TRACEBACK") == "1":
            raise
        print(f"{prog}: error: {_rank_and_host(world)}{describe(exc)} (MNIST_DIST_TRACEBACK=1 shows the traceback)",
              file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(code)


def _rank_and_host(world: World | None) -> str:
    return f"rank {world.rank} on {world.host}: " if world is not None and world.size > 1 else ""


def threads_per_worker(config: Config, world: World) -> int:
    """train.threads, else this node's cores shared evenly among its workers."""
    if config.train.threads:
        return config.train.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // world.local_size)


@dataclass
class EpochRecord:
    epoch: int  # 1-based: the number of epochs completed
    step: int
    train_loss: float
    train_accuracy: float
    eval_loss: float
    eval_accuracy: float
    wall_s: float  # seconds from process start to the end of this epoch's evaluation


def log_epoch(record: EpochRecord, epochs: int, images_per_sec: float) -> None:
    print(f"epoch {record.epoch}/{epochs} step {record.step}: train loss {record.train_loss:.4f} "
          f"acc {record.train_accuracy:.4f} | eval loss {record.eval_loss:.4f} acc {record.eval_accuracy:.4f} "
          f"| {images_per_sec:,.0f} img/s", flush=True)


def plot_history(history: list[EpochRecord], path: Path, title: str) -> None:
    """Training and evaluation accuracy and loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in ((acc, "accuracy"), (loss, "loss")):
        ax.plot(epochs, [getattr(r, f"train_{name}") for r in history], "o-", label="train")
        ax.plot(epochs, [getattr(r, f"eval_{name}") for r in history], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def progress_bar(total: int, config: Config, world: World, initial: int = 0):
    """A tqdm bar on the chief only, shown on a terminal (log.progress=auto) or when forced on.

    OpenMPI hands every rank a pseudo-terminal even when mpirun's output goes to a file, so under
    mpirun `auto` means off.
    """
    from tqdm import tqdm

    terminal = sys.stdout.isatty() and world.source != "openmpi"
    wanted = {"always": True, "never": False, "auto": terminal}[config.log.progress]
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not (wanted and world.is_chief))


def history_to_dicts(history: list[EpochRecord]) -> list[dict]:
    return [asdict(r) for r in history]


def history_from_dicts(rows: list[dict]) -> list[EpochRecord]:
    return [EpochRecord(**row) for row in rows]


def make_summary(config: Config, world: World, *, framework: str, backend: str, device: str,
                 global_batch_size: int, final_rows: np.ndarray, steps: int, history: list[EpochRecord], model_size_bytes: int,
                 first_step_at: float, dropped_per_epoch: int, restarts: int, world_size_history: list[dict],
                 framework_versions: dict) -> Summary:
    """The run's summary from every rank's FINAL_ROW (gathered) and the chief's records."""
    images, seconds, measured_steps, rss = (final_rows[:, i] for i in range(len(FINAL_ROW)))
    rates = combine_rates(images, seconds, measured_steps)
    last = history[-1]
    return Summary(
        framework=framework, backend=backend, model=config.model.name, dataset=config.data.dataset,
        world_size=world.size, num_nodes=world.num_nodes, device=device, precision=config.train.precision,
        batch_size_per_worker=config.train.batch_size, global_batch_size=global_batch_size,
        lr=config.scaled_lr(world.size), epochs=last.epoch, steps=steps,
        final_eval_accuracy=last.eval_accuracy, final_eval_loss=last.eval_loss,
        images_per_sec=rates.images_per_sec, images_per_sec_per_worker=rates.images_per_sec_per_worker,
        step_ms=rates.step_ms, warmup_steps=config.train.warmup_steps,
        peak_rss_bytes_max=int(rss.max()), peak_rss_bytes_mean=float(rss.mean()),
        model_size_bytes=model_size_bytes, wall_time_s=time.time() - PROCESS_START,
        startup_s=first_step_at - PROCESS_START, dropped_per_epoch=dropped_per_epoch, restarts=restarts,
        world_size_history=world_size_history, compression=config.dist.compression,
        accumulate_steps=config.train.accumulate_steps, versions=versions(**framework_versions),
    )
