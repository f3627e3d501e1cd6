"""`sweep --testbed PROFILES --forecast`: the forecast held against the sweep's own measurements.

What is taken as measured, and why. Compute: the framework's 1-worker points of every profile
together (one worker uses no link, so they measure the same thing). The collective's software at
each size (the framework's copies, reductions and messages): the points of the fastest profile,
whose link costs next to nothing. On this testbed the hosts share this machine's cores, and how its
scheduler shares them among n ranks that wake each other is this machine's behaviour, not a
cluster's: measured at every size, not predicted. The bytes a message waits behind on a loaded link
(TensorFlow's ring requests each chunk, and the request queues behind data; gloo's messages wait
less): the 2-worker point of the slowest profile.

What is predicted: every other point, from the profile's measured TCP rate. The ring moves
2(n-1)/n of the gradient over each link, pipelined with its software (a ring copies and reduces some
chunks while others are on the wire), so the slower of the two sets the pace; each of its 2(n-1)
messages waits behind the queued bytes at the profile's rate.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from launch.atomic_files import write_text
from launch.experiments.noise import CHANCE, Repeats, chance, separated
from launch.experiments.sweep import Point
from launch.forecast.inputs import DEFAULT_LATENCY, GBIT, WIRE_BYTES, collective_share
from launch.forecast.model import Cluster, Link, Workload, compute_s, images_per_s
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
    runs: Repeats  # the measured images/s of each repeat
    collective_share: float  # of the measured step, median over repeats and ranks
    role: str  # "calibration" (taken as measured) or "forecast"

    @property
    def measured(self) -> float:
        return self.runs.median

    @property
    def error(self) -> float:
        return self.forecast / self.measured - 1

    @property
    def missed(self) -> bool:
        """A forecast point whose collective is at least half the step, further than WITHIN from
        every repeat: where the repeats themselves differ more, the closest one decides."""
        nearest = min(abs(self.forecast / x - 1) for x in self.runs.values)
        return self.role == "forecast" and self.collective_share >= 0.5 and nearest > WITHIN


@dataclass(frozen=True)
class Bed:
    """What the testbed measured and shares: each profile's TCP rate, the machine's cores, threads per worker."""

    links_gbit: dict[str, float]
    cores: int
    threads: int


@dataclass(frozen=True)
class _Calibration:
    work: Workload
    software_bps: dict[int, float]  # the collective's software rate at each size
    queued_bytes: float  # what each message waits behind on a loaded link
    roles: set[tuple[str, int]]  # the (profile, workers) points taken as measured


def check(points: list[Point], bed: Bed) -> list[Check]:
    """One Check per measured (framework, profile, workers), where the fastest profile measured
    that size too (its collective's software)."""
    done = [p for p in points if p.ok]
    checks = []
    for framework in dict.fromkeys(p.framework for p in done):
        mine = [p for p in done if p.framework == framework]
        calibration = _calibrate(mine, bed)
        for profile in (p for p in bed.links_gbit if calibration and any(m.profile == p for m in mine)):
            sizes = [n for n in _sizes(mine, profile) if n == 1 or n in calibration.software_bps]
            checks += [_check(mine, profile, n, calibration, bed) for n in sizes]
    return checks


def _calibrate(mine: list[Point], bed: Bed) -> _Calibration | None:
    """None without a 1- and a 2-worker point on one profile."""
    usable = [p for p in bed.links_gbit if _at(mine, p, 1) and _at(mine, p, 2)]
    if not usable:
        return None
    fastest = max(usable, key=bed.links_gbit.get)
    slowest = min((p for p in bed.links_gbit if _at(mine, p, 2)), key=bed.links_gbit.get)
    work, fast = _workload([p for p in mine if p.workers == 1]), bed.links_gbit[fastest] * GBIT
    software = _software(mine, fastest, work, _cluster(bed, fast, 0.0))
    queued = _queued_bytes(_at(mine, slowest, 2), work, software[2], _cluster(bed, bed.links_gbit[slowest] * GBIT, 0))
    software = _software(mine, fastest, work, _cluster(bed, fast, queued / fast))  # with the queue's wait there too
    roles = {(p, 1) for p in bed.links_gbit} | {(fastest, n) for n in software} | {(slowest, 2)}
    return _Calibration(work, software, queued, roles)


def _check(mine: list[Point], profile: str, n: int, cal: _Calibration, bed: Bed) -> Check:
    at, link = _at(mine, profile, n), bed.links_gbit[profile] * GBIT
    software = cal.software_bps.get(n, float("inf"))  # 1 worker: no collective
    cluster = _cluster(bed, min(software, link), cal.queued_bytes / link)
    role = "calibration" if (profile, n) in cal.roles else "forecast"
    rate = images_per_s(cal.work, cluster, n, cal.work.batch)
    return Check(at[0].framework, profile, n, rate, _runs(at), _share(at), role)


def _cluster(bed: Bed, bytes_per_s: float, queued_s: float) -> Cluster:
    """One worker per host; the hosts share the machine's cores."""
    link = Link(bytes_per_s, DEFAULT_LATENCY["inter"] + queued_s)
    return Cluster(1, Link(float("inf"), 0.0), link, bed.cores, bed.threads)


def _at(points: list[Point], profile: str, n: int) -> list[Point]:
    return [p for p in points if p.profile == profile and p.workers == n]


def _sizes(points: list[Point], profile: str) -> list[int]:
    return sorted({p.workers for p in points if p.profile == profile})


def _workload(one: list[Point]) -> Workload:
    """The 1-worker points of every profile (one worker uses no link): their step, warm-up
    excluded, is all compute."""
    s = one[0].summary
    compute = statistics.median(_step_s(p) for p in one)
    return Workload(compute, s.batch_size_per_worker, s.parameters * WIRE_BYTES[s.compression])


def _collective_s(points: list[Point], work: Workload, cluster: Cluster) -> float:
    """What n workers add to the compute (all of it: the framework's own split of a step can leave
    some of the collective's cost in its compute), less the messages' latency."""
    n = points[0].workers
    added = statistics.median(_step_s(p) for p in points) - compute_s(work, cluster, n, work.batch)
    return added - 2 * (n - 1) * cluster.inter.latency_s


def _software(mine: list[Point], fastest: str, work: Workload, cluster: Cluster) -> dict[int, float]:
    return {n: _software_bps(_at(mine, fastest, n), work, cluster) for n in _sizes(mine, fastest) if n > 1}


def _software_bps(points: list[Point], work: Workload, cluster: Cluster) -> float:
    """The rate at which the ring's 2(n-1)/n of the gradient passed, on the fastest link."""
    n = points[0].workers
    return 2 * (n - 1) / n * work.gradient_bytes / max(_collective_s(points, work, cluster), 1e-9)


def _queued_bytes(two: list[Point], work: Workload, software_bps: float, cluster: Cluster) -> float:
    """The bytes each of the 2 messages of a 2-worker ring waited behind on the slowest link: its
    collective beyond the gradient's time at the slower of the link and the software."""
    link = cluster.inter.bytes_per_s
    beyond = _collective_s(two, work, cluster) - work.gradient_bytes / min(software_bps, link)
    return max(beyond, 0.0) / 2 * link


def _step_s(point: Point) -> float:
    """A full batch's step at the point's images/s, the figure the forecast is held to (an epoch's
    short last batch makes step_ms a little shorter)."""
    s = point.summary
    return s.world_size * s.batch_size_per_worker / s.images_per_sec


def _runs(points: list[Point]) -> Repeats:
    return Repeats(tuple(p.summary.images_per_sec for p in points))


def _share(points: list[Point]) -> float:
    return statistics.median(collective_share(r) for p in points for r in p.summary.ranks)


def markdown(checks: list[Check]) -> str:
    lines = [
        "## Forecast against measurement",
        "",
        "| framework | profile | workers | forecast img/s | measured img/s | repeats | error | collective share | role |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in checks:
        low, high = min(c.runs.values), max(c.runs.values)
        lines.append(
            f"| {c.framework} | {c.profile} | {c.workers} | {c.forecast:,.0f} | {c.measured:,.0f} | "
            f"{low:,.0f}..{high:,.0f} | {c.error:+.1%}{' ✗' if c.missed else ''} | {c.collective_share:.0%} | {c.role} |"
        )
    lines += [
        "",
        *_order(checks),
        "",
        f"measured: the median of the repeats (their range beside it); error: the forecast's over the median. "
        f"✗: a forecast point whose collective is at least half the step, more than {WITHIN:.0%} from every "
        f"repeat. Forecasts within {TIE:.0%} of each other are a tie (≈); an order is wrong only where every "
        f"run of one profile is beyond every run of the other, with a chance of at most {CHANCE:.0%} of that "
        "from noise (3 repeats a side at least).",
    ]
    return "\n".join(lines)


def _order(checks: list[Check]) -> list[str]:
    """Whether the measurement ranks the profiles as the forecast does, per framework and size: every
    pair the forecast tells apart (by more than TIE) measured in the same order. A pair measured the
    other way is wrong only where the repeats tell the two apart (launch.experiments.noise)."""
    lines = []
    for framework, n in dict.fromkeys((c.framework, c.workers) for c in checks if c.workers > 1):
        at = sorted((c for c in checks if (c.framework, c.workers) == (framework, n)), key=lambda c: -c.forecast)
        if len(at) < 2:
            continue
        apart = [(a, b) for i, a in enumerate(at) for b in at[i + 1 :] if a.forecast > (1 + TIE) * b.forecast]
        flipped = [_flip(a, b) for a, b in apart if b.measured >= a.measured]
        ranking = "".join(
            c.profile if i == 0 else (" ≈ " if at[i - 1].forecast <= (1 + TIE) * c.forecast else " > ") + c.profile
            for i, c in enumerate(at)
        )
        lines.append(
            f"- {framework}, {n} workers: forecast {ranking}: " + ("; ".join(flipped) or "the same order measured")
        )
    return lines


def _flip(faster: Check, slower: Check) -> str:
    """A pair measured in the other order than forecast: wrong, or within the repeats' noise."""
    told = separated(faster.runs, slower.runs) and chance(faster.runs, slower.runs) <= CHANCE
    said = f"{slower.profile} measured faster than {faster.profile}"
    return f"wrong: {said}" if told else f"{said}, within the runs' noise (not told apart)"


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
