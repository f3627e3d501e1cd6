"""What the chief shows of training while it runs: each logging interval's scalars in TensorBoard
(the run's, and one run per rank that TensorBoard overlays), the line naming a straggler, the
progress bar; each epoch's evaluation and its line in the log."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from launch import log
from launch.cluster.world import World
from launch.config import Config
from launch.outputs.tensorboard import ScalarWriter
from launch.run.comm import Rows
from launch.run.metrics import (
    EVAL_ACCURACY,
    EVAL_LOSS,
    IMAGES_PER_SEC,
    TRAIN_LOSS,
    ThroughputMeter,
    interval_scalars,
)
from launch.run.records import EpochRecord
from launch.run.stragglers import SPLIT, StragglerWatch

RANK_TAGS = ("rank/images_per_sec", "rank/compute_ms", "rank/collective_ms", "rank/data_ms")  # per step


class Reporter:
    """The chief's TensorBoard writers, straggler watch and progress bar; on other ranks, nothing."""

    def __init__(self, config: Config, world: World, run_dir: Path, first_step: int, hosts: list[str]):
        self.config, self.world, self.log = config, world, log.get()
        self.stragglers = StragglerWatch(config.log.straggler_threshold, hosts)
        self.writer = ScalarWriter(run_dir, first_step=first_step) if world.is_chief else None
        many = world.is_chief and world.size > 1
        ranks = run_dir / "ranks"
        self.rank_writers = [ScalarWriter(ranks / f"rank{r}", first_step) for r in range(world.size)] if many else []
        self.bar = None

    def open_bar(self, total: int, initial: int) -> None:
        self.bar = _progress_bar(total, self.config, self.world, initial)

    def advance(self) -> None:
        self.bar.update(1)

    def interval(self, rows: Rows, step: int) -> None:
        """One logging interval's rows (launch.run.loop.INTERVAL_ROW, every rank's)."""
        if not self.world.is_chief:
            return
        scalars = interval_scalars(rows)
        self._write(scalars, step)
        self._write_ranks(rows, step)
        for line in self.stragglers.observe(rows):
            self.log.warning(line)
        self.bar.set_postfix(loss=f"{scalars[TRAIN_LOSS]:.3f}", img_s=f"{scalars[IMAGES_PER_SEC]:,.0f}")

    def epoch(self, record: EpochRecord, meter: ThroughputMeter, steps_per_epoch: int) -> None:
        if not self.world.is_chief:
            return
        self._write({EVAL_LOSS: record.eval_loss, EVAL_ACCURACY: record.eval_accuracy}, record.step)
        self.log.info(
            f"{self._position(record, steps_per_epoch)}: train loss {record.train_loss:.4f} acc "
            f"{record.train_accuracy:.4f} | eval loss {record.eval_loss:.4f} acc {record.eval_accuracy:.4f} | "
            f"{self._rate(meter)}"
        )

    def _position(self, record: EpochRecord, steps_per_epoch: int) -> str:
        """`epoch E/EPOCHS step S`, or `epoch E step S/MAX` when train.max_steps ends the run first."""
        cfg = self.config.train
        if cfg.max_steps and cfg.max_steps < steps_per_epoch * cfg.epochs:
            return f"epoch {record.epoch} step {record.step}/{cfg.max_steps}"
        return f"epoch {record.epoch}/{cfg.epochs} step {record.step}"

    def _rate(self, meter: ThroughputMeter) -> str:
        """This start's throughput so far, or why there is none yet."""
        if not meter.measured_steps:
            return f"no step timed yet (this start's first {self.config.train.warmup_steps} are warm-up)"
        return f"{meter.measured_images * self.world.size / max(meter.measured_seconds, 1e-9):,.0f} img/s"

    def close(self) -> None:
        for writer in [self.writer, *self.rank_writers]:
            if writer:
                writer.close()
        if self.bar is not None:
            self.bar.close()

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.scalar(tag, value, step)

    def _write_ranks(self, rows: Rows, step: int) -> None:
        """Each rank's images/s and its step's split, in its own run: TensorBoard overlays them."""
        steps = np.maximum(rows["steps"], 1)
        per_rank = (rows["images"] / np.maximum(rows["seconds"], 1e-9), *(rows[k] / steps * 1000 for k in SPLIT))
        for rank, writer in enumerate(self.rank_writers):
            for tag, values in zip(RANK_TAGS, per_rank):
                if np.isfinite(values[rank]):
                    writer.scalar(tag, values[rank], step)


def _progress_bar(total: int, config: Config, world: World, initial: int):
    """A tqdm bar on the chief only, shown on a terminal (log.progress=auto) or when forced on.

    OpenMPI hands every rank a pseudo-terminal even when mpirun's output goes to a file, so under
    mpirun `auto` means off.
    """
    from tqdm import tqdm

    terminal = sys.stdout.isatty() and world.source != "openmpi"
    wanted = {"always": True, "never": False, "auto": terminal}[config.log.progress]
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not (wanted and world.is_chief))
