"""Reports from run summaries: the scaling table, plot and TensorBoard scalars of a sweep, and the
TensorFlow-vs-PyTorch comparison with a verdict, from the numbers, on each classic claim."""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from launch.experiments.hparams import Session, write_views
from launch.experiments.sweep import Point, series_name
from launch.frameworks import color as framework_color
from launch.outputs.summary import Summary
from launch.outputs.tensorboard import ScalarWriter

MIB = 1024 * 1024
LINESTYLES, MARKERS = ("-", "--", "-.", ":"), ("o", "s", "^", "D")  # per network profile, in sweep order


def hardware(summaries: list[Summary] = ()) -> str:
    """The CPU model and core count; with the runs' summaries, the GPU each ran on and its TF32 mode
    (the driver, CUDA and NCCL are in the versions line)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = sorted({(s.versions["gpu"], s.tf32) for s in summaries if "gpu" in s.versions})
    return "; ".join(
        [f"{model}, {os.cpu_count()} cores", *(f"GPU {g}, TF32 {'on' if on else 'off'}" for g, on in gpus)]
    )


def versions_line(summaries: list[Summary]) -> str:
    merged: dict[str, str] = {}
    for s in summaries:
        merged.update(s.versions)
    return ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))


# --- scaling ---------------------------------------------------------------------------------------


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
    step_ms: float

    @property
    def series(self) -> str:
        return series_name(self.framework, self.profile)


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
                    statistics.fmean(s.step_ms for s in done) if done else math.nan,
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


def write_scaling(
    rows: list[ScalingRow], points: list[Point], out: Path, links: dict[str, float] | None = None
) -> None:
    """scaling.csv, scaling.md, scaling.png and TensorBoard runs under out/tensorboard/<series>, with
    every point as an HParams session and a custom-scalars layout (launch.experiments.hparams);
    `links`: a testbed sweep's measured Gbit/s per network profile."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scaling.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(_CSV_COLUMNS))
        writer.writerows([value(r) for value in _CSV_COLUMNS.values()] for r in rows)
    (out / "scaling.md").write_text("\n".join(_scaling_markdown(rows, points, links)) + "\n")
    _plot_scaling(rows, out / "scaling.png")
    _scaling_scalars(rows, out / "tensorboard")
    efficiency = {(r.series, r.workers): r.efficiency for r in rows}
    sessions = [Session(p.run_name, p.summary, p.profile, efficiency[p.series, p.workers]) for p in points if p.ok]
    write_views(out / "tensorboard", sessions, scaling_layout=True)


def _scaling_markdown(rows: list[ScalingRow], points: list[Point], links: dict[str, float] | None) -> list[str]:
    summaries = [p.summary for p in points if p.ok]
    failed = [p for p in points if not p.ok]
    lines = [
        f"# Scaling ({rows[0].mode} scaling)" if rows else "# Scaling",
        "",
        f"Hardware: {hardware(summaries)}. Versions: {versions_line(summaries)}.",
        "",
    ]
    if summaries:
        s, strong = summaries[0], rows[0].mode == "strong"
        lines += [
            f"Model {s.model}, dataset {s.dataset}, precision {s.precision}, "
            f"{'global' if strong else 'per-worker'} batch "
            f"{s.global_batch_size if strong else s.batch_size_per_worker}; "
            "throughput excludes warm-up; mean ± standard deviation over repeats.",
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
            f"{_num(r.images_per_sec)} ± {_num(r.spread)} | "
            f"{_num(r.per_worker)} | {_num(r.efficiency, 2)} | {_num(r.peak_rss_mib)} MiB | "
            f"{_num(r.step_ms, 2)} | {r.runs}/{r.failed} |"
        )
    if failed:
        lines += ["", "Failed points: " + ", ".join(f"{p.run_name} (exit code {p.exit_code})" for p in failed)]
    return lines


def _scaling_scalars(rows: list[ScalingRow], folder: Path) -> None:
    for series in dict.fromkeys(r.series for r in rows):
        writer = ScalarWriter(folder / series)  # one run per series: the curves overlay
        for r in rows:
            if r.series == series and r.runs:
                writer.scalar("scaling/images_per_sec", r.images_per_sec, r.workers)
                writer.scalar("scaling/images_per_sec_per_worker", r.per_worker, r.workers)
                if not math.isnan(r.efficiency):
                    writer.scalar("scaling/efficiency", r.efficiency, r.workers)
        writer.close()


def _plot_scaling(rows: list[ScalingRow], path: Path) -> None:
    """One curve per series: colour by framework, line style and marker by network profile."""
    plt = _pyplot()
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- comparison ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    claim: str
    verdict: str  # confirmed | refuted | inconclusive
    evidence: str


def ratio_verdict(claim: str, ratio: float, evidence: str, margin: float = 0.05) -> Verdict:
    """Confirmed when the ratio favours the claim by more than `margin`, refuted when it goes the
    other way by more than `margin`, inconclusive in between."""
    verdict = "confirmed" if ratio < 1 - margin else "refuted" if ratio > 1 + margin else "inconclusive"
    return Verdict(claim, verdict, f"{evidence} (ratio {ratio:.2f}; ±{margin:.0%} counts as a tie)")


def verdicts(torch: Summary, tf: Summary, reloaded: dict[str, int | str]) -> list[Verdict]:
    """Each classic claim against this run's numbers. `reloaded` maps framework -> the parameter count
    of its saved model reloaded in a fresh process, or the reason it did not reload."""
    result = [
        ratio_verdict(
            "TensorFlow trains faster thanks to its graph",
            torch.images_per_sec / tf.images_per_sec,
            f"tf {tf.images_per_sec:,.0f} img/s vs torch {torch.images_per_sec:,.0f} img/s",
        ),
        ratio_verdict(
            "PyTorch uses less memory",
            torch.peak_rss_bytes_max / tf.peak_rss_bytes_max,
            f"peak RSS per worker: torch {torch.peak_rss_bytes_max / MIB:,.0f} MiB vs "
            f"tf {tf.peak_rss_bytes_max / MIB:,.0f} MiB",
        ),
        ratio_verdict(
            "PyTorch models are smaller",
            torch.model_size_bytes / tf.model_size_bytes,
            f"saved model: torch {torch.model_size_bytes:,} B (model.pt) vs tf {tf.model_size_bytes:,} B (model.keras)",
        ),
    ]
    problems = [f"{fw}: {value}" for fw, value in reloaded.items() if isinstance(value, str)]
    counts = {fw: value for fw, value in reloaded.items() if isinstance(value, int)}
    if not problems and len(set(counts.values())) > 1:
        problems.append(f"parameter counts differ after reloading: {counts}")
    result.append(
        Verdict(
            "Both are portable",
            "refuted" if problems else "confirmed",
            "; ".join(problems)
            if problems
            else "the same config ran unchanged in both, and each saved model reloaded in a fresh process with "
            + " and ".join(f"{fw} {n:,}" for fw, n in counts.items())
            + " parameters",
        )
    )
    return result


def time_to_accuracy(history: list[dict], target: float) -> float | None:
    """Seconds from start to the end of the first epoch whose test accuracy reached `target`."""
    return next((row["wall_s"] for row in history if row["eval_accuracy"] >= target), None)


@dataclass
class Compared:
    """One model trained in both frameworks: what finished, keyed by framework."""

    runs: dict[str, Summary] = field(default_factory=dict)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    reloaded: dict[str, int | str] = field(default_factory=dict)  # parameters after reloading, or why not

    def verdicts(self) -> list[Verdict]:
        """Empty unless both frameworks finished."""
        if set(self.runs) != {"torch", "tf"}:
            return []
        return verdicts(self.runs["torch"], self.runs["tf"], self.reloaded)


def overall(verdicts_by_model: dict[str, Verdict]) -> str:
    """One model's verdict when every model agrees, else which way it went for which."""
    found = {v.verdict for v in verdicts_by_model.values()}
    if len(found) == 1:
        return found.pop()
    return "depends on the model: " + ", ".join(f"{v.verdict} for {m}" for m, v in verdicts_by_model.items())


def write_comparison(
    compared: dict[str, Compared], target: float, launcher: str, out: Path
) -> dict[str, list[Verdict]]:
    """compare.md and compare.png, one section per model; returns each model's verdicts (empty for a
    model one of whose runs failed)."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = [s for c in compared.values() for s in c.runs.values()]
    lines = ["# TensorFlow vs PyTorch", ""]
    if summaries:
        s = summaries[0]
        lines += [
            f"Hardware: {hardware(summaries)}; {s.world_size} worker(s) via {launcher}, device {s.device}. "
            f"Versions: {versions_line(summaries)}.",
            f"Same data ({s.dataset}), batch {s.batch_size_per_worker} per worker, {s.epochs} epoch(s), "
            f"precision {s.precision} in both, for each model: {', '.join(compared)}. "
            "Times count from each process's start.",
            "",
        ]
    for model, c in compared.items():
        lines += [f"## {model}", "", *_measures(c, target), ""]
    found = {model: c.verdicts() for model, c in compared.items()}
    lines += _verdict_table({m: v for m, v in found.items() if v})
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    _plot_comparison(compared, out / "compare.png")
    return found


def _measures(c: Compared, target: float) -> list[str]:
    names = [fw for fw in ("torch", "tf") if fw in c.runs]
    missing = [fw for fw in ("torch", "tf") if fw not in c.runs]
    lines = [f"**Failed: {', '.join(missing)}** — only what finished is shown.", ""] if missing else []
    fields = [
        ("training throughput (img/s, warm-up excluded)", lambda s, h: f"{s.images_per_sec:,.0f}"),
        ("throughput per worker (img/s)", lambda s, h: f"{s.images_per_sec_per_worker:,.0f}"),
        (
            f"time to {target:.0%} test accuracy (s)",
            lambda s, h: (lambda t: f"{t:.1f}" if t is not None else "not reached")(time_to_accuracy(h, target)),
        ),
        ("final test accuracy", lambda s, h: f"{s.final_eval_accuracy:.4f}"),
        ("peak RSS per worker (MiB)", lambda s, h: f"{s.peak_rss_bytes_max / MIB:,.0f}"),
        ("saved model size (bytes)", lambda s, h: f"{s.model_size_bytes:,}"),
        ("startup to first step (s)", lambda s, h: f"{s.startup_s:.2f}"),
        ("wall time (s)", lambda s, h: f"{s.wall_time_s:.1f}"),
    ]
    lines += ["| measure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, value in fields:
        lines.append(f"| {label} | " + " | ".join(value(c.runs[fw], c.histories[fw]) for fw in names) + " |")
    return lines


def _verdict_table(found: dict[str, list[Verdict]]) -> list[str]:
    """| claim | verdict | one column per model: its verdict and evidence |"""
    if not found:
        return []
    models = list(found)
    lines = ["## Verdicts", "", "| claim | verdict | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for i, claim in enumerate(v.claim for v in found[models[0]]):
        mine = {m: found[m][i] for m in models}
        cells = [f"**{v.verdict}**: {v.evidence}" for v in mine.values()]
        lines.append(f"| {claim} | **{overall(mine)}** | " + " | ".join(cells) + " |")
    return lines


def _plot_comparison(compared: dict[str, Compared], path: Path) -> None:
    """One row per model: throughput, peak RSS and model size bars, and test accuracy over time."""
    plt = _pyplot()
    fig, grid = plt.subplots(len(compared), 4, figsize=(15, 3.6 * len(compared)), squeeze=False)
    bars = [
        ("img/s", lambda s: s.images_per_sec),
        ("peak RSS MiB", lambda s: s.peak_rss_bytes_max / MIB),
        ("model bytes", lambda s: s.model_size_bytes),
    ]
    for axes, (model, c) in zip(grid, compared.items()):
        names = [fw for fw in ("torch", "tf") if fw in c.runs]
        for ax, (label, value) in zip(axes, bars):
            ax.bar(names, [value(c.runs[fw]) for fw in names], color=[framework_color(fw) for fw in names])
            ax.set_title(f"{model}: {label}")
        for fw in names:
            rows = c.histories[fw]
            axes[3].plot(
                [r["wall_s"] for r in rows],
                [r["eval_accuracy"] for r in rows],
                "o-",
                label=fw,
                color=framework_color(fw),
            )
        axes[3].set_title(f"{model}: test accuracy vs s from start")
        axes[3].legend()
    fig.suptitle(hardware(), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
