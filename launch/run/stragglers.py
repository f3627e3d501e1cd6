"""Which rank holds the others back. Every logging interval each rank reports how its steps' time
split into compute (forward, backward, update), the gradients' collective (waiting for the slowest
rank, then reducing) and data (everything else: the epoch's shard, batches); in synchronous data
parallelism every rank takes as long as the slowest, so the slow one is the rank whose own work
(compute + data) is longest while the others wait for it in the collective.

A rank whose own work per step stays above (1 + log.straggler_threshold) times the median of the
other ranks' for `intervals` logging intervals in a row is named once, by rank and host, until it
recovers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from launch.run.comm import Rows

SPLIT = ("compute", "collective", "data")  # where a rank's interval went


@dataclass
class StragglerWatch:
    threshold: float  # a rank is slow above (1 + threshold) x the others' median; 0 watches nothing
    hosts: list[str]  # every rank's host, for the message
    intervals: int = 3  # in a row, so that one noisy interval names nobody
    streak: dict[int, int] = field(default_factory=dict)  # rank -> slow intervals in a row
    named: set[int] = field(default_factory=set)  # named and not yet recovered

    def observe(self, rows: Rows) -> list[str]:
        """One interval's rows (compute, collective, data, steps per rank): a line for each rank that
        has just become a straggler."""
        steps = np.maximum(rows["steps"], 1)
        own = (rows["compute"] + rows["data"]) / steps
        if not self.threshold or len(own) < 2 or not np.isfinite(own).all():
            return []
        lines = []
        for rank, work in enumerate(own):
            others = float(np.median(np.delete(own, rank)))
            slow = others > 0 and work > (1 + self.threshold) * others
            self.streak[rank] = self.streak.get(rank, 0) + 1 if slow else 0
            if not slow:
                self.named.discard(rank)
            elif self.streak[rank] >= self.intervals and rank not in self.named:
                self.named.add(rank)
                lines.append(self._line(rank, rows, steps, others))
        return lines

    def _line(self, rank: int, rows: Rows, steps: np.ndarray, others: float) -> str:
        per_step = {name: rows[name] / steps * 1000 for name in SPLIT}
        work = per_step["compute"][rank] + per_step["data"][rank]
        waits = [per_step["collective"][r] for r in range(len(steps)) if r != rank]
        wait = f"; the others wait {float(np.median(waits)):.1f} ms a step in the collective" if waits else ""
        return (
            f"rank {rank} on {self.hosts[rank]} holds the others back: its own work takes {work:.1f} ms a step "
            f"(compute {per_step['compute'][rank]:.1f}, data {per_step['data'][rank]:.1f}), "
            f"{work / (others * 1000):.1f}x the other ranks' median of {others * 1000:.1f} ms, for the last "
            f"{self.streak[rank]} intervals{wait} (log.straggler_threshold={self.threshold:g})"
        )


def split(epoch_seconds: float, step_seconds: float, compute: float, collective: float) -> tuple[float, float, float]:
    """(compute, collective, data) seconds of one rank's interval. The engine splits its steps'
    time into compute and collective where it can (else the steps' whole time is compute and the
    collective unknown: NaN); data is preparing the epoch's shard, plus whatever of the steps' time
    the engine's split leaves out (the batch's arrival, the step's dispatch). The loop's own
    bookkeeping and logging count in none."""
    if math.isnan(compute):
        return step_seconds, math.nan, epoch_seconds
    return compute, collective, epoch_seconds + max(0.0, step_seconds - compute - collective)
