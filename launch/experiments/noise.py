"""How far repeated measurements can be trusted: their spread, whether two sets of runs can be told
apart, and how busy the machine was while they ran.

Two sets are told apart only when every run of one is beyond every run of the other. For n and m
runs that arrangement has probability 2 / C(n+m, n) when both come from one distribution (the
exact two-sided Mann-Whitney test at its most extreme): 0.10 for 3 and 3, 0.33 for 2 and 2. Only
a separation with a chance of at most CHANCE counts: three runs a side at least.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass

NOISY = 0.10  # a measurement whose standard deviation exceeds this fraction of its mean is flagged
CHANCE = 0.10  # the most a separation may have happened by chance and still tell two sets apart


@dataclass(frozen=True)
class Repeats:
    """One measure over a point's repeats."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def spread(self) -> float:
        """Standard deviation as a fraction of the mean (0 for one run)."""
        if len(self.values) < 2 or not statistics.fmean(self.values):
            return 0.0
        return statistics.stdev(self.values) / abs(statistics.fmean(self.values))

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY

    def span(self, form: str = "{:,.0f}") -> str:
        """The median, with min..max where there are several runs."""
        low, high = min(self.values, default=math.nan), max(self.values, default=math.nan)
        if low == high:  # one run, or runs that agree exactly
            return form.format(low)
        if not self.values:
            return "n/a"
        return f"{form.format(self.median)} ({form.format(low)}..{form.format(high)})"


def separated(a: Repeats, b: Repeats) -> bool:
    """Every run of one beyond every run of the other."""
    return bool(a.values and b.values) and (max(a.values) < min(b.values) or max(b.values) < min(a.values))


def chance(a: Repeats, b: Repeats) -> float:
    """How likely a separation as complete as this is when there is no difference (module docstring)."""
    return 2 / math.comb(len(a.values) + len(b.values), len(a.values))


def load_average() -> float:
    """The machine's 1-minute load average (runnable processes, ours included)."""
    return os.getloadavg()[0]


def conditions(threads: int, repeats: int, load: tuple[float, float]) -> str:
    """The line a report gives on how its figures were measured."""
    return (
        f"{repeats} repeat(s) of every point, interleaved; {threads} thread(s) per worker; load average "
        f"(1 min) {load[0]:.2f} at the start and {load[1]:.2f} at the end, on {os.cpu_count()} cores."
    )


def noise_hint(load: tuple[float, float]) -> str:
    """Why a spread may be wide, and what would narrow it."""
    return (
        f"other work on the machine (its load average reached {max(load):.2f} on {os.cpu_count()} cores) "
        "or more threads than free cores; rerun on a quieter machine, with fewer train.threads, or more --repeats"
    )


def crowded(threads: int, workers: int) -> str | None:
    """A warning when the machine is already busy for the threads a run asks for: with fewer free
    cores than threads, an OpenMP pool spin-waits on a core another process holds (a torch MLP beside
    one busy process on 2 cores, at 2 threads: 1,100 img/s instead of 100,000)."""
    load, cores = load_average(), os.cpu_count() or 1
    if load + threads * workers <= cores + 0.5:
        return None
    fewer = max(1, int(cores - load) // workers)
    fix = f"pass train.threads={fewer} or run on a quieter machine" if fewer < threads else "run on a quieter machine"
    return (
        f"load average {load:.2f} on {cores} cores before the runs (the last minute's, recent runs "
        f"included): {workers} worker(s) x {threads} thread(s) will contend with it, and the figures with them; {fix}"
    )
