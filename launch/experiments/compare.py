"""TensorFlow vs PyTorch on the same model, data, batch, epochs and threads: compare.md and compare.png,
with a verdict on each classic claim that holds only where the repeats tell the frameworks apart
(launch.experiments.noise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from launch.atomic_files import write_text
from launch.experiments import sweep
from launch.experiments.header import hardware, versions_line
from launch.experiments.hparams import Session, write_views
from launch.experiments.noise import CHANCE, NOISY, Repeats, chance, conditions, load_average, noise_hint, separated
from launch.frameworks import FRAMEWORKS
from launch.frameworks import color as framework_color
from launch.jobs import children
from launch.outputs.plots import pyplot, save_png
from launch.outputs.rundir import HISTORY_FILE
from launch.outputs.summary import Summary

MIB = 1024 * 1024
TIE = 0.05  # a difference of medians within this fraction is no claim either way


@dataclass(frozen=True)
class CompareSpec:
    """A comparison: each model trained in every framework `repeats` times, with the same runs' options."""

    models: tuple[str, ...]
    out: Path
    nproc: int = 1
    launcher: str = "local"
    config_path: str | None = None
    overrides: tuple[str, ...] = ()  # the same threads in both are among them
    run_options: tuple[str, ...] = ()  # passed to every `mnist-dist run`
    repeats: int = 3
    threads: int = 1  # per worker, as the overrides set it


def compare(spec: CompareSpec, target: float) -> tuple[dict[str, list], list[sweep.Point]]:
    """Train every model in every framework `repeats` times, interleaved (runs
    `<framework>-<model>-r<k>` under out/runs), write compare.md, compare.png and the runs' HParams
    sessions; return each model's verdicts (empty where a framework has no finished run) and every
    run's point. A stop ends the comparison after the run it stopped."""
    compared = {model: Compared() for model in spec.models}
    points, start = [], load_average()
    for repeat in range(spec.repeats):
        for model in spec.models:
            if not children.stopped_by():
                _train_model(spec, model, repeat, compared[model], points)
    load = (start, load_average())
    found = write_comparison(compared, target, spec, load)
    write_views(spec.out / "runs", [Session(p.run_name, p.summary) for p in points if p.ok])
    return found, points


def _train_model(spec: CompareSpec, model: str, repeat: int, compared: Compared, points: list) -> None:
    """One repeat of one model in every framework, added to `compared` and `points`."""
    runs = spec.out / "runs"
    for framework in FRAMEWORKS:
        if children.stopped_by():
            break  # a stop during the last point ends the comparison
        name = f"{framework}-{model}-r{repeat}"
        overrides = (*spec.overrides, f"model.name={model}")
        job = sweep.PointJob(
            framework, spec.nproc, name, runs, spec.launcher, spec.config_path, overrides, spec.run_options
        )
        with children.forwarding():
            point = sweep.run_point(job)
        points.append(point)
        if not point.ok:
            compared.failed[framework] = compared.failed.get(framework, 0) + 1
            continue
        run_dir = sweep.run_folder(runs, name)
        compared.runs.setdefault(framework, []).append(point.summary)
        compared.histories.setdefault(framework, []).append(json.loads((run_dir / HISTORY_FILE).read_text())["epochs"])
        if framework not in compared.reloaded:
            compared.reloaded[framework] = _reload(framework, run_dir / FRAMEWORKS[framework].model_file)


def _reload(framework: str, model: Path) -> int | str:
    """The parameter count of a saved model reloaded in a fresh process, or why it did not reload."""
    if model.is_symlink() or model.stat().st_uid != os.geteuid():
        return f"{model} is not your own file: not reloaded"
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
    verdict: str  # confirmed | refuted | not distinguishable
    evidence: str


def ratio_verdict(claim: str, mine: Repeats, other: Repeats, evidence: str, noisy: bool = True) -> Verdict:
    """A claim that `mine` (torch's runs) is below `other` (TensorFlow's): confirmed or refuted when
    their medians differ by more than TIE and, for a measure that varies from run to run (`noisy`),
    every run of one is beyond every run of the other; else not distinguishable, saying why. Runs
    that spread more than NOISY say so."""
    verdict = _decide(claim, mine, other, f"{evidence}; ratio {mine.median / other.median:.2f}", noisy)
    spread = [f"{fw} {r.spread:.0%}" for fw, r in (("torch", mine), ("tf", other)) if r.noisy]
    if noisy and spread:
        verdict.evidence += f"; noisy: the runs spread {', '.join(spread)} of their mean"
    return verdict


def _decide(claim: str, mine: Repeats, other: Repeats, said: str, noisy: bool) -> Verdict:
    ratio = mine.median / other.median
    if abs(ratio - 1) <= TIE:
        return Verdict(claim, "not distinguishable", f"{said}: within ±{TIE:.0%}, a tie")
    if noisy and chance(mine, other) > CHANCE:
        runs = f"{len(mine.values)} and {len(other.values)} runs"
        return Verdict(
            claim, "not distinguishable", f"{said}: {runs} cannot tell noise from a difference (--repeats 3)"
        )
    if noisy and not separated(mine, other):
        return Verdict(claim, "not distinguishable", f"{said}: the runs overlap, so this machine cannot tell")
    verdict = "confirmed" if ratio < 1 else "refuted"
    sure = f"; every run beyond every run of the other (chance {chance(mine, other):.2f} if equal)" if noisy else ""
    return Verdict(claim, verdict, said + sure)


def verdicts(torch: list[Summary], tf: list[Summary], reloaded: dict[str, int | str]) -> list[Verdict]:
    """Each classic claim against these runs' numbers (one summary per repeat). `reloaded` maps
    framework -> the parameter count of its saved model reloaded in a fresh process, or the reason it
    did not reload."""

    def measure(runs: list[Summary], value) -> Repeats:
        return Repeats(tuple(value(s) for s in runs))

    rate = [measure(runs, lambda s: s.images_per_sec) for runs in (torch, tf)]
    rss = [measure(runs, lambda s: s.peak_rss_bytes_max / MIB) for runs in (torch, tf)]
    size = [measure(runs, lambda s: s.model_size_bytes) for runs in (torch, tf)]
    return [
        ratio_verdict(
            "TensorFlow trains faster thanks to its graph",
            *rate,
            f"img/s: tf {rate[1].span()} vs torch {rate[0].span()}",
        ),
        ratio_verdict(
            "PyTorch uses less memory", *rss, f"peak RSS per worker, MiB: torch {rss[0].span()} vs tf {rss[1].span()}"
        ),
        ratio_verdict(
            "PyTorch models are smaller",
            *size,
            f"saved model: torch {size[0].median:,.0f} B (model.pt) vs tf {size[1].median:,.0f} B (model.keras)",
            noisy=False,  # the same bytes every run
        ),
        _portable(reloaded),
    ]


def _portable(reloaded: dict[str, int | str]) -> Verdict:
    problems = [f"{fw}: {value}" for fw, value in reloaded.items() if isinstance(value, str)]
    counts = {fw: value for fw, value in reloaded.items() if isinstance(value, int)}
    if not problems and len(set(counts.values())) > 1:
        problems.append(f"parameter counts differ after reloading: {counts}")
    return Verdict(
        "Both are portable",
        "refuted" if problems else "confirmed",
        "; ".join(problems)
        if problems
        else "the same config ran unchanged in both, and each saved model reloaded in a fresh process with "
        + " and ".join(f"{fw} {n:,}" for fw, n in counts.items())
        + " parameters",
    )


def time_to_accuracy(history: list[dict], target: float) -> float | None:
    """Seconds from start to the end of the first epoch whose test accuracy reached `target`."""
    return next((row["wall_s"] for row in history if row["eval_accuracy"] >= target), None)


@dataclass
class Compared:
    """One model trained in both frameworks: what finished (one entry per repeat), keyed by framework."""

    runs: dict[str, list[Summary]] = field(default_factory=dict)
    histories: dict[str, list[list[dict]]] = field(default_factory=dict)
    reloaded: dict[str, int | str] = field(default_factory=dict)  # the first run's parameters after reloading
    failed: dict[str, int] = field(default_factory=dict)  # runs that did not finish

    def verdicts(self) -> list[Verdict]:
        """The classic claims are about TensorFlow and PyTorch: empty unless both finished a run."""
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
    compared: dict[str, Compared], target: float, spec: CompareSpec, load: tuple[float, float]
) -> dict[str, list[Verdict]]:
    """compare.md and compare.png, one section per model; returns each model's verdicts (empty for a
    model one of whose frameworks finished no run). `load`: the load average at the start and end."""
    spec.out.mkdir(parents=True, exist_ok=True)
    summaries = [s for c in compared.values() for runs in c.runs.values() for s in runs]
    lines = ["# TensorFlow vs PyTorch", ""]
    if summaries:
        s = summaries[0]
        lines += [
            f"Hardware: {hardware(summaries)}; {s.world_size} worker(s) via {spec.launcher}, device {s.device}. "
            f"Versions: {versions_line(summaries)}.",
            f"Same data ({s.dataset}), batch {s.batch_size_per_worker} per worker, {s.epochs} epoch(s), "
            f"precision {s.precision} in both, for each model: {', '.join(compared)}. "
            "Times count from each process's start.",
            f"Peak: {peak_line(s.peak)}.",
            f"Measured: {conditions(spec.threads, spec.repeats, load)} Each cell is the median over the "
            f"repeats (min..max); ⚠ marks runs that spread more than {NOISY:.0%} of their mean.",
            "",
        ]
    for model, c in compared.items():
        lines += [f"## {model}", "", *_measures(c, target), ""]
    found = {model: c.verdicts() for model, c in compared.items()}
    lines += _verdict_table({m: v for m, v in found.items() if v})
    if any("noisy:" in v.evidence for found_ in found.values() for v in found_):
        lines += ["", f"Noisy runs: {noise_hint(load)}."]
    write_text(spec.out / "compare.md", "\n".join(lines) + "\n")
    _plot_comparison(compared, spec.out / "compare.png")
    return found


def peak_line(peak: dict) -> str:
    """The hardware's peak and each of its inputs with its source (launch.cluster.peak)."""
    if not peak.get("flops_per_s"):
        return "unknown (" + "; ".join(str(v[1]) for v in peak.get("inputs", {}).values()) + ")"
    inputs = "; ".join(f"{name} {value} ({source})" for name, (value, source) in peak["inputs"].items())
    return f"{peak['flops_per_s'] / 1e9:,.1f} GFLOP/s over {peak['units']}: {inputs}"


_MEASURES = [  # label, value of one run (its summary, its history; None: not reached), format
    ("training throughput (img/s, warm-up excluded)", lambda s, h, t: s.images_per_sec, "{:,.0f}"),
    ("throughput per worker (img/s)", lambda s, h, t: s.images_per_sec_per_worker, "{:,.0f}"),
    ("time to {target:.0%} test accuracy (s)", lambda s, h, t: time_to_accuracy(h, t), "{:.1f}"),
    ("final test accuracy", lambda s, h, t: s.final_eval_accuracy, "{:.4f}"),
    ("training FLOPs per image", lambda s, h, t: s.flops_per_image or None, "{:,.0f}"),
    ("fraction of the hardware's peak FLOP/s", lambda s, h, t: s.fraction_of_peak or None, "{:.1%}"),
    ("peak RSS per worker (MiB)", lambda s, h, t: s.peak_rss_bytes_max / MIB, "{:,.0f}"),
    ("saved model size (bytes)", lambda s, h, t: s.model_size_bytes, "{:,.0f}"),
    ("startup to first step (s)", lambda s, h, t: s.startup_s, "{:.2f}"),
    ("wall time (s)", lambda s, h, t: s.wall_time_s, "{:.1f}"),
]


def _measures(c: Compared, target: float) -> list[str]:
    names = [fw for fw in FRAMEWORKS if fw in c.runs]
    failed = [f"{fw} ({n} of its runs)" for fw, n in c.failed.items()]
    lines = [f"**Failed: {', '.join(failed)}** — only what finished is shown.", ""] if failed else []
    lines += ["| measure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, value, form in _MEASURES:
        cells = [_cell([value(s, h, target) for s, h in zip(c.runs[fw], c.histories[fw])], form) for fw in names]
        lines.append(f"| {label.format(target=target)} | " + " | ".join(cells) + " |")
    return lines


def _cell(values: list[float | None], form: str) -> str:
    """A measure over the repeats: median (min..max), ⚠ where noisy; what no run reached, said."""
    reached = Repeats(tuple(v for v in values if v is not None))
    if not reached.values:
        return "not reached"
    cell = reached.span(form) + (" ⚠" if reached.noisy else "")
    return cell if len(reached.values) == len(values) else f"{cell}, {len(reached.values)} of {len(values)} runs"


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
    """One row per model: throughput, peak RSS and model size bars (median, min..max as error bars),
    and every run's test accuracy over time."""
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
            runs = [Repeats(tuple(value(s) for s in c.runs[fw])) for fw in names]
            medians = [r.median for r in runs]
            errors = [
                [m - min(r.values) for m, r in zip(medians, runs)],
                [max(r.values) - m for m, r in zip(medians, runs)],
            ]
            ax.bar(names, medians, yerr=errors, capsize=4, color=[framework_color(fw) for fw in names])
            ax.set_title(f"{model}: {label}")
        for fw in names:
            for k, rows in enumerate(c.histories[fw]):
                axes[3].plot(
                    [r["wall_s"] for r in rows],
                    [r["eval_accuracy"] for r in rows],
                    "o-",
                    label=fw if k == 0 else None,
                    color=framework_color(fw),
                    alpha=0.8 if k == 0 else 0.4,
                )
        axes[3].set_title(f"{model}: test accuracy vs s from start, every run")
        axes[3].legend()
    fig.suptitle(hardware(), fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
