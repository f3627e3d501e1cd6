"""TensorFlow vs PyTorch on the same model, data, batch, epochs and threads: compare.md and compare.png,
with a verdict, from the numbers, on each classic claim."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launch.experiments import sweep
from launch.experiments.header import hardware, versions_line
from launch.experiments.hparams import Session, write_views
from launch.frameworks import FRAMEWORKS
from launch.frameworks import color as framework_color
from launch.jobs import children
from launch.outputs.plots import pyplot
from launch.outputs.rundir import HISTORY_FILE
from launch.outputs.summary import Summary

MIB = 1024 * 1024


@dataclass(frozen=True)
class CompareSpec:
    """A comparison: each model trained in every framework, with the same runs' options."""

    models: tuple[str, ...]
    out: Path
    nproc: int = 1
    launcher: str = "local"
    config_path: str | None = None
    overrides: tuple[str, ...] = ()  # the same threads in both are among them
    run_options: tuple[str, ...] = ()  # passed to every `mnist-dist run`


def compare(spec: CompareSpec, target: float) -> tuple[dict[str, list], list[sweep.Point]]:
    """Train every model in every framework (runs `<framework>-<model>` under out/runs), write
    compare.md, compare.png and the runs' HParams sessions; return each model's verdicts (empty
    where a run failed) and every run's point. A stop ends the comparison after the run it stopped."""
    compared, points = {}, []
    for model in spec.models:
        compared[model] = _compare_model(spec, model, points)
        if children.stopped_by():
            break
    found = write_comparison(compared, target, spec.launcher, spec.out)
    write_views(spec.out / "runs", [Session(p.run_name, p.summary) for p in points if p.ok])
    return found, points


def _compare_model(spec: CompareSpec, model: str, points: list) -> Compared:
    """One model in every framework; its points are added to `points`."""
    compared, runs = Compared(), spec.out / "runs"
    for framework in FRAMEWORKS:
        if children.stopped_by():
            break  # a stop during the last point ends the comparison
        name = f"{framework}-{model}"
        overrides = (*spec.overrides, f"model.name={model}")
        job = sweep.PointJob(
            framework, spec.nproc, name, runs, spec.launcher, spec.config_path, overrides, spec.run_options
        )
        with children.forwarding():
            point = sweep.run_point(job)
        points.append(point)
        if point.ok:
            run_dir = next(p.parent for p in runs.glob(f"{name}*/{HISTORY_FILE}"))
            compared.runs[framework] = point.summary
            compared.histories[framework] = json.loads((run_dir / HISTORY_FILE).read_text())["epochs"]
            compared.reloaded[framework] = _reload(framework, next(run_dir.glob("model.*")))
    return compared


def _reload(framework: str, model: Path) -> int | str:
    """The parameter count of a saved model reloaded in a fresh process, or why it did not reload."""
    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORKS[framework].reload_model, str(model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return f"{model.name} did not reload: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    return int(result.stdout.split()[-1])


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
        """The classic claims are about TensorFlow and PyTorch: empty unless both finished."""
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
    names = [fw for fw in FRAMEWORKS if fw in c.runs]
    missing = [fw for fw in FRAMEWORKS if fw not in c.runs]
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
    plt = pyplot()
    fig, grid = plt.subplots(len(compared), 4, figsize=(15, 3.6 * len(compared)), squeeze=False)
    bars = [
        ("img/s", lambda s: s.images_per_sec),
        ("peak RSS MiB", lambda s: s.peak_rss_bytes_max / MIB),
        ("model bytes", lambda s: s.model_size_bytes),
    ]
    for axes, (model, c) in zip(grid, compared.items()):
        names = [fw for fw in FRAMEWORKS if fw in c.runs]
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
