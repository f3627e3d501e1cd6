"""A sweep's report: the scaling table (scaling.md, scaling.csv), its plot and TensorBoard scalars."""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from launch.atomic_files import atomic_write, write_text
from launch.experiments.header import hardware, num, versions_line
from launch.experiments.hparams import BAND, Session, write_views
from launch.experiments.noise import NOISY, conditions, noise_hint
from launch.experiments.sweep import Point, series_name
from launch.frameworks import color as framework_color
from launch.outputs.plots import pyplot, save_png
from launch.outputs.tensorboard import ScalarWriter, image_summary, text_summary

MIB = 1024 * 1024
LINESTYLES, MARKERS = ("-", "--", "-.", ":"), ("o", "s", "^", "D")  # per network profile, in sweep order


@dataclass
class ScalingRow:
    framework: str
    profile: str  # network profile of a testbed sweep, "" otherwise
    mode: str
    workers: int
    runs: int  # that finished
    failed: int
    images_per_sec: float  # mean over repeats (nan when every repeat failed)
    spread: float  # standard deviation over repeats (0 for one repeat)
    per_worker: float
    efficiency: float  # throughput(N) / (N x throughput(1))
    peak_rss_mib: float  # per worker, the largest seen
    step_ms: float  # the global batch at the mean throughput: one step's time, as img/s implies it

    @property
    def series(self) -> str:
        return series_name(self.framework, self.profile)

    @property
    def noisy(self) -> bool:
        return self.runs > 1 and self.spread > NOISY * self.images_per_sec


def scaling_rows(points: list[Point], mode: str) -> list[ScalingRow]:
    """One row per (series, workers): a series is a framework, or a framework under a network profile,
    and its efficiency is against its own 1-worker point."""
    rows = []
    for series in dict.fromkeys(p.series for p in points):
        mine = [p for p in points if p.series == series]
        base = None
        for n in sorted({p.workers for p in mine}):
            done = [p.summary for p in mine if p.workers == n and p.ok]
            failed = sum(1 for p in mine if p.workers == n and not p.ok)
            rates = [s.images_per_sec for s in done]
            mean = statistics.fmean(rates) if rates else math.nan
            if n == 1:
                base = mean
            rows.append(
                ScalingRow(
                    mine[0].framework,
                    mine[0].profile,
                    mode,
                    n,
                    len(done),
                    failed,
                    mean,
                    statistics.stdev(rates) if len(rates) > 1 else 0.0,
                    mean / n,
                    mean / (n * base) if base else math.nan,
                    max((s.peak_rss_bytes_max for s in done), default=math.nan) / MIB,
                    1000 * statistics.fmean(s.global_batch_size for s in done) / mean if done else math.nan,
                )
            )
    return rows


_CSV_COLUMNS = {  # scaling.csv: column -> its value in a row
    "framework": lambda r: r.framework,
    "profile": lambda r: r.profile,
    "mode": lambda r: r.mode,
    "workers": lambda r: r.workers,
    "runs": lambda r: r.runs,
    "failed": lambda r: r.failed,
    "images_per_sec_mean": lambda r: f"{r.images_per_sec:.1f}",
    "images_per_sec_std": lambda r: f"{r.spread:.1f}",
    "images_per_sec_per_worker": lambda r: f"{r.per_worker:.1f}",
    "efficiency": lambda r: f"{r.efficiency:.3f}",
    "peak_rss_mib_per_worker": lambda r: f"{r.peak_rss_mib:.0f}",
    "step_ms": lambda r: f"{r.step_ms:.2f}",
}


@dataclass(frozen=True)
class Measured:
    """How a sweep's points were measured: the load average at its start and end, its repeats, and a
    testbed sweep's TCP Gbit/s per network profile."""

    load: tuple[float, float]
    repeats: int
    links: dict[str, float] = field(default_factory=dict)


def write_scaling(rows: list[ScalingRow], points: list[Point], out: Path, measured: Measured) -> None:
    """scaling.csv, scaling.md, scaling.png and TensorBoard runs under out/tensorboard/<series>, with
    every point as an HParams session and a custom-scalars layout (launch.experiments.hparams)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "scaling.csv", "w") as f:
        writer = csv.writer(f)
        writer.writerow(list(_CSV_COLUMNS))
        writer.writerows([value(r) for value in _CSV_COLUMNS.values()] for r in rows)
    markdown = "\n".join(_scaling_markdown(rows, points, measured)) + "\n"
    write_text(out / "scaling.md", markdown)
    _plot_scaling(rows, out / "scaling.png")
    _scaling_scalars(rows, out / "tensorboard", markdown, out / "scaling.png")
    efficiency = {(r.series, r.workers): r.efficiency for r in rows}
    sessions = [Session(p.run_name, p.summary, p.profile, efficiency[p.series, p.workers]) for p in points if p.ok]
    write_views(out / "tensorboard", sessions, scaling_layout=True)


def _scaling_markdown(rows: list[ScalingRow], points: list[Point], measured: Measured) -> list[str]:
    summaries = [p.summary for p in points if p.ok]
    failed = [p for p in points if not p.ok]
    links = measured.links
    lines = [
        f"# Scaling ({rows[0].mode} scaling)" if rows else "# Scaling",
        "",
        f"Hardware: {hardware(summaries)}. Versions: {versions_line(summaries)}.",
        "",
    ]
    if summaries:
        s, strong = summaries[0], rows[0].mode == "strong"
        threads = max((r.get("threads", 0) for x in summaries for r in x.ranks), default=0)
        lines += [
            f"Model {s.model}, dataset {s.dataset}, precision {s.precision}, "
            f"{'global' if strong else 'per-worker'} batch "
            f"{s.global_batch_size if strong else s.batch_size_per_worker}; "
            "throughput excludes warm-up; mean ± standard deviation over repeats; step ms is the global "
            f"batch at the mean img/s; ⚠ marks a standard deviation above {NOISY:.0%} of the mean.",
            "",
            f"Measured: {conditions(threads, measured.repeats, measured.load)}",
            "",
        ]
    profiled = any(r.profile for r in rows)
    if profiled:
        lines += [
            "Network: a testbed of hosts on this machine (network namespaces), one worker per host, every "
            "link shaped to the profile (tc tbf; loopback: unshaped); efficiency against 1 worker under the "
            "same profile. Measured TCP node1 -> node2: "
            + (", ".join(f"{p} {g:.2f} Gbit/s" for p, g in links.items()) if links else "-")
            + ".",
            "",
        ]
    lines += [
        f"| framework |{' network |' if profiled else ''} mode | workers | img/s (mean ± sd) | "
        "img/s per worker | efficiency | peak RSS per worker | step ms | runs ok/failed |",
        f"|---|{'---|' if profiled else ''}---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.framework} |{f' {r.profile} |' if profiled else ''} {r.mode} | {r.workers} | "
            f"{num(r.images_per_sec)} ± {num(r.spread)}{' ⚠' if r.noisy else ''} | "
            f"{num(r.per_worker)} | {num(r.efficiency, 2)} | {num(r.peak_rss_mib)} MiB | "
            f"{num(r.step_ms, 2)} | {r.runs}/{r.failed} |"
        )
    noisy = [f"{r.series} x{r.workers}" for r in rows if r.noisy]
    if noisy:
        lines += ["", f"Noisy points ({', '.join(noisy)}), their efficiency with them: {noise_hint(measured.load)}."]
    if failed:
        lines += ["", "Failed points: " + ", ".join(f"{p.run_name} (exit code {p.exit_code})" for p in failed)]
    return lines


def _scaling_scalars(rows: list[ScalingRow], folder: Path, table: str, plot: Path) -> None:
    """One run per series (the curves overlay), the world size as the step, and each value's band
    (± the point's standard deviation) under scaling_band/ for the custom-scalars margin charts, which
    TensorBoard draws as written: it smooths other charts by default (a curve of two points, 1.0 and
    0.42, reads 0.64) and clips them to ignore outliers. The first run also holds the table (Text
    dashboard) and the plot (Images dashboard), as the files have them."""
    for i, series in enumerate(dict.fromkeys(r.series for r in rows)):
        writer = ScalarWriter(folder / series)
        if i == 0:
            writer.summary(text_summary("scaling/table", table))
            writer.summary(image_summary("scaling/plot", plot))
        for r in rows:
            if r.series != series or not r.runs:
                continue
            relative = r.spread / r.images_per_sec if r.images_per_sec else 0.0
            values = {"images_per_sec": r.images_per_sec, "images_per_sec_per_worker": r.per_worker}
            if not math.isnan(r.efficiency):
                values["efficiency"] = r.efficiency
            for name, value in values.items():
                writer.scalar(f"scaling/{name}", value, r.workers)
                writer.scalar(f"{BAND}/{name}_low", value * (1 - relative), r.workers)
                writer.scalar(f"{BAND}/{name}_high", value * (1 + relative), r.workers)
        writer.close()


def _plot_scaling(rows: list[ScalingRow], path: Path) -> None:
    """One curve per series: colour by framework, line style and marker by network profile."""
    plt = pyplot()
    fig, (thr, eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    profiles = list(dict.fromkeys(r.profile for r in rows))
    for series in dict.fromkeys(r.series for r in rows):
        mine = [r for r in rows if r.series == series and r.runs]
        if not mine:
            continue
        n = [r.workers for r in mine]
        color = framework_color(mine[0].framework)
        i = profiles.index(mine[0].profile)
        style = dict(color=color, linestyle=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)])
        thr.errorbar(
            n, [r.images_per_sec for r in mine], yerr=[r.spread for r in mine], capsize=3, label=series, **style
        )
        base = next((r.images_per_sec for r in mine if r.workers == 1), None)
        if base and len(profiles) == 1:  # with profiles, the efficiency panel shows what ideal would be
            thr.plot(n, [base * k for k in n], ":", color=color, label=f"{series} ideal")
        eff.plot(n, [r.efficiency for r in mine], label=series, **style)
    eff.axhline(1.0, color="gray", linestyle=":", label="ideal")
    for ax, label in ((thr, "images/sec (all workers)"), (eff, "efficiency = T(N) / (N T(1))")):
        ax.set_xlabel("workers")
        ax.set_ylabel(label)
        ax.set_xticks(sorted({r.workers for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend()
    eff.set_ylim(bottom=0)
    fig.suptitle(f"{rows[0].mode if rows else ''} scaling on {hardware()}", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
