"""A forecast as a reader gets it: the inputs with their sources, a table per calibration and mode,
forecast.md, forecast.csv, forecast.png, and TensorBoard scalars under the sweep's tags (one run per
calibration, `forecast-<name>`), so that a sweep's measured curves and the forecast overlay."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

from launch.atomic_files import write_text
from launch.forecast import accuracy
from launch.forecast.accuracy import Reached, TimeTo
from launch.forecast.inputs import GBIT, Calibration
from launch.forecast.model import Point, bandwidth_for, forecast
from launch.outputs.plots import pyplot, save_png
from launch.outputs.tensorboard import ScalarWriter

COLUMNS = ["name", "mode", "workers", "nodes", "batch_per_worker", "images_per_sec", "efficiency"]
COLUMNS += ["compute_ms", "allreduce_ms", "needed_gbit"]


@dataclass(frozen=True)
class Question:
    workers: list[int]
    global_batch: int  # strong scaling's; 0: the calibration's batch x 32
    target: float  # the efficiency whose link bandwidth each N needs
    faster: float  # what a device with this many times the peak would change
    accuracy: float | None = None  # the eval accuracy to forecast the time to (launch.forecast.accuracy)


@dataclass
class Forecast:
    cal: Calibration
    mode: str
    global_batch: int
    points: list[Point]
    needed: list[float | None]  # bytes/s per point, for the target
    reached: list[Reached] = field(default_factory=list)  # the runs that give the epochs to q.accuracy
    times: list[TimeTo] = field(default_factory=list)  # weak scaling's time to q.accuracy, where asked


def run(cals: list[Calibration], q: Question, reached: list[Reached]) -> list[Forecast]:
    """`reached`: the runs that give the epochs to q.accuracy (none: images/s alone)."""
    out = []
    for cal in cals:
        for mode in ("weak", "strong"):
            global_batch = q.global_batch or cal.work.batch * 32
            workers = [n for n in q.workers if mode == "weak" or global_batch / n >= 1]
            points = forecast(cal.work, cal.cluster, workers, mode, global_batch)
            needed = [bandwidth_for(q.target, cal.work, cal.cluster, n, mode, global_batch) for n in workers]
            times = accuracy.time_to(points, reached) if reached and mode == "weak" else []
            out.append(Forecast(cal, mode, global_batch, points, needed, reached, times))
    return out


def markdown(forecasts: list[Forecast], q: Question) -> str:
    lines = []
    for cal in dict.fromkeys(f.cal.name for f in forecasts):
        first = next(f for f in forecasts if f.cal.name == cal)
        lines += [f"## {cal}", "", "| input | value | from |", "|---|---:|---|"]
        lines += [f"| {p.name} | {p.value} | {p.source} |" for p in first.cal.params]
        lines += ["", *_peak_lines(first.cal, q), ""]
        for f in (f for f in forecasts if f.cal.name == cal):
            lines += _table(f, q), ""
            if f.times:
                lines += accuracy.markdown(f.times, f.reached, q.accuracy), ""
    return "\n".join(lines)


def _table(f: Forecast, q: Question) -> str:
    head = f"### {f.mode} scaling" + (f" at a global batch of {f.global_batch:,}" if f.mode == "strong" else "")
    rows = [
        head,
        "",
        f"| workers | nodes | batch per worker | img/s | efficiency | compute ms | all-reduce ms | "
        f"link Gbit/s for {q.target:.0%} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, need in zip(f.points, f.needed):
        rows.append(
            f"| {p.workers} | {_nodes(f, p)} | {p.batch:,.4g} | {p.images_per_s:,.0f} | {p.efficiency:.3f} | "
            f"{p.compute_s * 1000:.3f} | {p.sync_s * 1000:.3f} | {_gbit(need, p.workers, f.cal.cluster.per_node)} |"
        )
    if any(need is None and p.workers > 1 for p, need in zip(f.points, f.needed)):
        rows += [
            "",
            "unreachable: no link reaches the target; the latency or, in strong scaling, the compute's fixed part caps it.",
        ]
    return "\n".join(rows)


def _nodes(f: Forecast, p: Point) -> int:
    return -(-p.workers // f.cal.cluster.per_node)


def _gbit(bps: float | None, workers: int, per_node: int) -> str:
    """The link a size needs: between nodes, or (marked) inside its one node."""
    if workers < 2:
        return "—"
    inside = " (in node)" if workers <= per_node else ""
    return "unreachable" if bps is None else f"{bps / GBIT:,.3g}{inside}"


def _peak_lines(cal: Calibration, q: Question) -> list[str]:
    """The calibration's fraction of peak, and what a device `q.faster` times faster would change."""
    lines = []
    if cal.peak.get("flops_per_s"):
        lines.append(
            f"Measured at {cal.peak['fraction_of_peak']:.1%} of the peak of {cal.peak['units']} "
            f"({cal.peak['flops_per_s'] / 1e9:,.1f} GFLOP/s; {cal.peak['flops_per_image']:,} FLOPs per image)."
        )
    n = max(q.workers)
    now = forecast(cal.work, cal.cluster, [n], "weak")[0]
    quick = replace(cal.work, compute_s=cal.work.compute_s / q.faster, fixed_s=cal.work.fixed_s / q.faster)
    then = forecast(quick, cal.cluster, [n], "weak")[0]
    lines.append(
        f"A device with {q.faster:g}x the peak at the same fraction of it: at {n} workers, efficiency "
        f"{now.efficiency:.3f} -> {then.efficiency:.3f}, images/s x{then.images_per_s / now.images_per_s:.2f} (weak)."
    )
    return lines


def write(forecasts: list[Forecast], q: Question, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "forecast.md", "# Forecast\n\n" + markdown(forecasts, q) + "\n")
    write_text(out / "forecast.csv", _csv(forecasts))
    _plot(forecasts, out / "forecast.png")
    for f in (f for f in forecasts if f.mode == "weak"):
        writer = ScalarWriter(out / "tensorboard" / f"forecast-{f.cal.name}", first_step=f.points[0].workers)
        for p in f.points:
            writer.scalar("scaling/images_per_sec", p.images_per_s, p.workers)
            writer.scalar("scaling/efficiency", p.efficiency, p.workers)
        writer.close()


def _csv(forecasts: list[Forecast]) -> str:
    buffer = io.StringIO()
    rows = csv.writer(buffer)
    rows.writerow(COLUMNS)
    for f in forecasts:
        for p, need in zip(f.points, f.needed):
            needed = "" if need is None or p.workers < 2 else f"{need / GBIT:.6g}"
            rows.writerow(
                [
                    f.cal.name,
                    f.mode,
                    p.workers,
                    _nodes(f, p),
                    f"{p.batch:g}",
                    f"{p.images_per_s:.6g}",
                    f"{p.efficiency:.6f}",
                    f"{p.compute_s * 1000:.6g}",
                    f"{p.sync_s * 1000:.6g}",
                    needed,
                ]
            )
    return buffer.getvalue()


def _plot(forecasts: list[Forecast], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, mode in zip(axes, ("weak", "strong")):
        for f in (f for f in forecasts if f.mode == mode):
            ax.plot([p.workers for p in f.points], [p.efficiency for p in f.points], "o-", label=f.cal.name)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("workers")
        ax.set_ylabel("efficiency")
        ax.set_title(f"{mode} scaling (forecast)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)
