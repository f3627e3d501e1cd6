"""`sweep --testbed PROFILES --forecast`: the forecast held against the sweep's own measurements.

What is taken as measured, and what is predicted. Compute: the framework's 1-worker points of every
profile together (one worker uses no link, so they measure the same thing). The framework's own
collective rate (gloo's or TensorFlow's copies, reductions and messages): what its 2-worker point
on the fastest profile adds to the 1-worker step. Everything else is predicted. Software and wire
are pipelined (a ring copies and reduces some chunks while others are on the wire), so the slower
sets the pace: a profile's link is the lower of that rate and the profile's measured TCP rate. The
testbed's hosts share this machine's cores: n workers of t threads on C cores run their CPU work
(compute and the collective's software) max(1, n·t/C) times slower, which the forecast applies
here and not on a real cluster.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from launch.atomic_files import write_text
from launch.experiments.sweep import Point
from launch.forecast.inputs import DEFAULT_LATENCY, GBIT, WIRE_BYTES, collective_share
from launch.forecast.model import Cluster, Link, Workload, images_per_s
from launch.outputs.plots import pyplot, save_png
from launch.outputs.tensorboard import ScalarWriter

WITHIN = 0.15  # the bar for forecast points whose collective is at least half the step
TIE = 0.05  # forecasts this close are a tie: no order to check between them


@dataclass(frozen=True)
class Check:
    framework: str
    profile: str
    workers: int
    forecast: float  # images/s
    measured: float  # images/s, the median over the repeats
    collective_share: float  # of the measured step, median over repeats and ranks
    role: str  # "calibration" (taken as measured) or "forecast"

    @property
    def error(self) -> float:
        return self.forecast / self.measured - 1


@dataclass(frozen=True)
class Bed:
    """What the testbed measured and shares: each profile's TCP rate, the machine's cores, threads per worker."""

    links_gbit: dict[str, float]
    cores: int
    threads: int

    def sharing(self, n: int) -> float:
        """How much slower CPU work runs when n workers take turns on the cores."""
        return max(1.0, n * self.threads / self.cores)


def check(points: list[Point], bed: Bed) -> list[Check]:
    """One Check per measured (framework, profile, workers)."""
    done = [p for p in points if p.ok]
    checks = []
    for framework in dict.fromkeys(p.framework for p in done):
        mine = [p for p in done if p.framework == framework]
        fastest = max(
            (p for p in bed.links_gbit if _at(mine, p, 1) and _at(mine, p, 2)), key=bed.links_gbit.get, default=None
        )
        if fastest is None:
            continue
        work = _workload([p for p in mine if p.workers == 1])
        software = _software_bps(_at(mine, fastest, 2), work)
        for profile in dict.fromkeys(p.profile for p in mine):
            checks += _profile(mine, profile, (work, software), bed, fastest)
    return checks


def _profile(mine: list[Point], profile: str, calibration: tuple, bed: Bed, fastest: str) -> list[Check]:
    """The framework's points under one profile: its software rate slowed as the CPU work is, or the
    link's rate, whichever is lower."""
    (work, software), checks = calibration, []
    for n in sorted({p.workers for p in mine if p.profile == profile}):
        link = Link(min(software / bed.sharing(n), bed.links_gbit[profile] * GBIT), DEFAULT_LATENCY["inter"])
        cluster = Cluster(1, Link(float("inf"), 0.0), link, bed.cores, bed.threads)
        role = "calibration" if n == 1 or (n == 2 and profile == fastest) else "forecast"
        at = _at(mine, profile, n)
        checks.append(
            Check(at[0].framework, profile, n, images_per_s(work, cluster, n, work.batch), _rate(at), _share(at), role)
        )
    return checks


def _at(points: list[Point], profile: str, n: int) -> list[Point]:
    return [p for p in points if p.profile == profile and p.workers == n]


def _workload(one: list[Point]) -> Workload:
    """The 1-worker points of every profile (one worker uses no link): their step, warm-up
    excluded, is all compute."""
    s = one[0].summary
    compute = statistics.median(p.summary.step_ms / 1000 for p in one)
    return Workload(compute, s.batch_size_per_worker, s.parameters * WIRE_BYTES.get(s.compression, 4))


def _software_bps(two: list[Point], one: Workload) -> float:
    """What 2 workers add to 1's step is their all-reduce (all of it: the framework's own split of a
    step can leave some of the collective's cost in its compute): it moves the gradient G each way."""
    seconds = statistics.median(p.summary.step_ms / 1000 for p in two) - one.compute_s
    return one.gradient_bytes / max(seconds - 2 * DEFAULT_LATENCY["inter"], 1e-9)


def _rate(points: list[Point]) -> float:
    return statistics.median(p.summary.images_per_sec for p in points)


def _share(points: list[Point]) -> float:
    return statistics.median(collective_share(r) for p in points for r in p.summary.ranks)


def markdown(checks: list[Check]) -> str:
    lines = [
        "## Forecast against measurement",
        "",
        "| framework | profile | workers | forecast img/s | measured img/s | error | collective share | role |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in checks:
        flag = " ✗" if c.role == "forecast" and c.collective_share >= 0.5 and abs(c.error) > WITHIN else ""
        lines.append(
            f"| {c.framework} | {c.profile} | {c.workers} | {c.forecast:,.0f} | {c.measured:,.0f} | "
            f"{c.error:+.1%}{flag} | {c.collective_share:.0%} | {c.role} |"
        )
    lines += [
        "",
        *_order(checks),
        "",
        f"✗: a forecast point whose collective is at least half the step, off by more than {WITHIN:.0%}.",
    ]
    return "\n".join(lines)


def _order(checks: list[Check]) -> list[str]:
    """Whether the measurement ranks the profiles as the forecast does, per framework and size: every
    pair the forecast tells apart (by more than TIE) in the same order; closer pairs are ties."""
    lines = []
    for framework, n in dict.fromkeys((c.framework, c.workers) for c in checks if c.workers > 1):
        at = sorted((c for c in checks if (c.framework, c.workers) == (framework, n)), key=lambda c: -c.forecast)
        if len(at) < 2:
            continue
        apart = [(a, b) for i, a in enumerate(at) for b in at[i + 1 :] if a.forecast > (1 + TIE) * b.forecast]
        wrong = [f"{b.profile} measured faster than {a.profile}" for a, b in apart if b.measured >= a.measured]
        ranking = "".join(
            c.profile if i == 0 else (" ≈ " if at[i - 1].forecast <= (1 + TIE) * c.forecast else " > ") + c.profile
            for i, c in enumerate(at)
        )
        lines.append(
            f"- {framework}, {n} workers: forecast {ranking}: " + ("; ".join(wrong) or "the same order measured")
        )
    return lines


def write(checks: list[Check], out: Path) -> None:
    """forecast.md, forecast.png (measured points and forecast lines per profile) and TensorBoard
    runs forecast-<framework>-<profile> under the sweep's tags, beside its measured runs."""
    write_text(out / "forecast.md", "# " + markdown(checks)[3:] + "\n")
    series = dict.fromkeys((c.framework, c.profile) for c in checks)
    for framework, profile in series:
        mine = [c for c in checks if (c.framework, c.profile) == (framework, profile)]
        one = next((c.forecast for c in mine if c.workers == 1), None)
        writer = ScalarWriter(out / "tensorboard" / f"forecast-{framework}-{profile}", first_step=mine[0].workers)
        for c in mine:
            writer.scalar("scaling/images_per_sec", c.forecast, c.workers)
            if one:
                writer.scalar("scaling/efficiency", c.forecast / (c.workers * one), c.workers)
        writer.close()
    _plot(checks, series, out / "forecast.png")


def _plot(checks: list[Check], series: dict, path: Path) -> None:
    plt = pyplot()
    frameworks = list(dict.fromkeys(f for f, _ in series))
    fig, axes = plt.subplots(1, len(frameworks), figsize=(5.5 * len(frameworks), 4), squeeze=False)
    for ax, framework in zip(axes[0], frameworks):
        for k, (_, profile) in enumerate(s for s in series if s[0] == framework):
            mine = [c for c in checks if (c.framework, c.profile) == (framework, profile)]
            color = f"C{k}"
            ax.plot(
                [c.workers for c in mine], [c.measured for c in mine], "o", color=color, label=f"{profile} measured"
            )
            ax.plot(
                [c.workers for c in mine], [c.forecast for c in mine], "--", color=color, label=f"{profile} forecast"
            )
        ax.set_yscale("log")
        ax.set_xlabel("workers (hosts)")
        ax.set_ylabel("images/s")
        ax.set_title(framework)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
