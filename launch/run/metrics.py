"""Throughput math shared by both trainers: what is timed, what is excluded, how ranks combine.

Each rank times its own training steps; evaluation and checkpoints are outside the timed spans, and
the first `warmup_steps` steps are left out of the summary figures. Ranks combine by gathering one
small row of numbers each: the global rate is all images over the slowest rank's time (not rank
0's rate times N), and the per-worker rate is that divided by the world size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from launch.run.comm import Rows

# TensorBoard scalar tags: what sweeps, comparisons and tests read back.
IMAGES_PER_SEC = "throughput/images_per_sec"
IMAGES_PER_SEC_PER_WORKER = "throughput/images_per_sec_per_worker"
STEP_MS = "time/step_ms"
TRAIN_LOSS, TRAIN_ACCURACY = "train/loss", "train/accuracy"
EVAL_LOSS, EVAL_ACCURACY = "eval/loss", "eval/accuracy"
TRAINING_TAGS = (IMAGES_PER_SEC, IMAGES_PER_SEC_PER_WORKER, STEP_MS, TRAIN_LOSS, TRAIN_ACCURACY)
ALL_TAGS = TRAINING_TAGS + (EVAL_LOSS, EVAL_ACCURACY)


class ThroughputMeter:
    """Counts images and seconds of training steps, for logging intervals and for the summary.

    `sync` waits for the device (a no-op on CPU); it runs only at interval and warm-up boundaries
    so that asynchronous GPU work is charged to the right span without a host sync per step. The
    process's CPU time (every thread's) is counted over the same measured spans: the cores a rank
    keeps busy (summary.json's busy_cores) tell a rank that computes from one that waits.
    """

    def __init__(self, warmup_steps: int, interval: int, sync: Callable[[], None] = lambda: None):
        self.warmup_steps, self.interval, self.sync = warmup_steps, interval, sync
        self.steps = 0
        self.measured_images, self.measured_seconds, self.measured_steps = 0, 0.0, 0
        self.measured_cpu_seconds = 0.0
        self.interval_images, self.interval_seconds, self.interval_steps = 0, 0.0, 0
        self.resume()

    def resume(self) -> None:
        """Start timing again after an untimed span (evaluation, checkpoint)."""
        self._last, self._last_cpu = time.perf_counter(), time.process_time()

    def step(self, images: int, global_step: int, end_of_epoch: bool = False) -> bool:
        """Record one step; True when it closes a logging interval (every `interval` steps, and at
        the end of each epoch so that evaluation never falls inside a timed interval)."""
        self.steps += 1
        closes = global_step % self.interval == 0 or end_of_epoch
        if closes or self.steps == self.warmup_steps:
            self.sync()
        now, cpu = time.perf_counter(), time.process_time()
        seconds, cpu_seconds, self._last, self._last_cpu = now - self._last, cpu - self._last_cpu, now, cpu
        self.interval_images += images
        self.interval_seconds += seconds
        self.interval_steps += 1
        if self.steps > self.warmup_steps:
            self.measured_images += images
            self.measured_seconds += seconds
            self.measured_steps += 1
            self.measured_cpu_seconds += cpu_seconds
        return closes

    def take_interval(self) -> tuple[int, float, int]:
        out = (self.interval_images, self.interval_seconds, self.interval_steps)
        self.interval_images, self.interval_seconds, self.interval_steps = 0, 0.0, 0
        return out


@dataclass(frozen=True)
class Rates:
    images_per_sec: float  # all ranks together
    images_per_sec_per_worker: float
    step_ms: float


def combine_rates(images: np.ndarray, seconds: np.ndarray, steps: np.ndarray) -> Rates:
    """Rates from per-rank images, seconds and steps: all images over the slowest rank's time."""
    slowest = float(np.max(seconds))
    world = len(images)
    if slowest <= 0 or np.max(steps) == 0:
        return Rates(0.0, 0.0, 0.0)
    total = float(np.sum(images)) / slowest
    return Rates(total, total / world, 1000.0 * slowest / float(np.max(steps)))


def interval_scalars(rows: Rows) -> dict[str, float]:
    """TensorBoard scalars for one logging interval from every rank's images, seconds, steps, loss sum
    and correct predictions."""
    rates = combine_rates(rows["images"], rows["seconds"], rows["steps"])
    seen = rows.total("images")
    return {
        IMAGES_PER_SEC: rates.images_per_sec,
        IMAGES_PER_SEC_PER_WORKER: rates.images_per_sec_per_worker,
        STEP_MS: rates.step_ms,
        TRAIN_LOSS: rows.total("loss_sum") / seen,
        TRAIN_ACCURACY: rows.total("correct") / seen,
    }
