"""Time to an accuracy, not only images/s: a larger global batch takes more epochs to reach the same
accuracy (its statistical efficiency, as Pollux's goodput weighs it), so more workers buy less than
their images/s say.

From runs at several global batches, each a real run of k workers or one process standing in for
them (`train.accumulate_steps=k` and the learning rate k workers get), the epochs each took to
reach the target accuracy: between two measured global batches, interpolated in log2 of the batch;
beyond them, not guessed. The time at N workers is those epochs at N's global batch times an
epoch's images over the forecast's images/s.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from launch.errors import UserError
from launch.forecast.model import Point
from launch.outputs.rundir import SUMMARY_FILE
from launch.outputs.summary import read_summary

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class Reached:
    """One run: its global batch and the epochs it took to reach the target (None: never did)."""

    global_batch: int
    epochs: float | None
    images_per_epoch: int
    ran: int  # epochs the run trained


def epochs_to(accuracies: list[float], target: float) -> float | None:
    """The epoch at which the eval accuracy first reached `target`: inside the epoch that crossed it,
    linear between the two evaluations; the first epoch, when it was reached at once."""
    for epoch, accuracy in enumerate(accuracies, start=1):
        if accuracy >= target:
            if epoch == 1:
                return 1.0
            before = accuracies[epoch - 2]
            return epoch - 1 + (target - before) / (accuracy - before)
    return None


def read(folders: list[Path], target: float) -> list[Reached]:
    reached = []
    for folder in folders:
        if not (folder / SUMMARY_FILE).is_file() or not (folder / HISTORY_FILE).is_file():
            raise UserError(f"{folder}: no {SUMMARY_FILE} and {HISTORY_FILE}; give finished runs' folders")
        summary = read_summary(folder / SUMMARY_FILE)
        accuracies = [e["eval_accuracy"] for e in json.loads((folder / HISTORY_FILE).read_text())["epochs"]]
        per_epoch = summary.steps * summary.global_batch_size // max(summary.epochs, 1)
        reached.append(Reached(summary.global_batch_size, epochs_to(accuracies, target), per_epoch, len(accuracies)))
    return sorted(reached, key=lambda r: r.global_batch)


def epochs_at(reached: list[Reached], global_batch: float) -> float | None:
    """The median epochs of the runs at this global batch, or interpolated between the nearest
    measured ones; None beyond them, or where most runs at a batch never reached the target."""
    batches = sorted({r.global_batch for r in reached})
    if not batches or not batches[0] <= global_batch <= batches[-1]:
        return None
    low = max(b for b in batches if b <= global_batch)
    high = min(b for b in batches if b >= global_batch)
    a, b = _median_epochs(reached, low), _median_epochs(reached, high)
    if a is None or b is None or low == high:
        return a if low == high else None
    share = (math.log2(global_batch) - math.log2(low)) / (math.log2(high) - math.log2(low))
    return a + share * (b - a)


def _median_epochs(reached: list[Reached], batch: int) -> float | None:
    runs = [r.epochs for r in reached if r.global_batch == batch]
    done = [e for e in runs if e is not None]
    return statistics.median(done) if len(done) * 2 > len(runs) else None


@dataclass(frozen=True)
class TimeTo:
    workers: int
    global_batch: float
    epochs: float | None
    seconds: float | None  # to the target, training alone (no evaluation, no start-up)


def time_to(points: list[Point], reached: list[Reached]) -> list[TimeTo]:
    """Weak-scaling points: each N's epochs at its global batch, at its forecast images/s."""
    per_epoch = reached[0].images_per_epoch
    out = []
    for p in points:
        epochs = epochs_at(reached, p.workers * p.batch)
        seconds = epochs * per_epoch / p.images_per_s if epochs is not None else None
        out.append(TimeTo(p.workers, p.workers * p.batch, epochs, seconds))
    return out


def markdown(times: list[TimeTo], reached: list[Reached], target: float) -> str:
    one = next((t.seconds for t in times if t.workers == 1), None)
    low, high = reached[0].global_batch, reached[-1].global_batch
    rows = [
        f"### Time to {target:.1%} eval accuracy (weak scaling)",
        "",
        "| workers | global batch | epochs to target | training time | speed-up over 1 worker |",
        "|---:|---:|---:|---:|---:|",
    ]
    for t in times:
        epochs = f"{t.epochs:.2f}" if t.epochs is not None else "not measured"
        if t.epochs is None and low <= t.global_batch <= high:
            epochs = "not reached"
        seconds = _seconds(t.seconds) if t.seconds is not None else "—"
        faster = f"{one / t.seconds:.2f}x" if one and t.seconds else "—"
        rows.append(f"| {t.workers} | {t.global_batch:,.0f} | {epochs} | {seconds} | {faster} |")
    measured = "; ".join(_measured(reached, batch) for batch in dict.fromkeys(r.global_batch for r in reached))
    rows += ["", f"Epochs to the target per measured global batch (runs): {measured}; interpolated between them."]
    return "\n".join(rows)


def _measured(reached: list[Reached], batch: int) -> str:
    """`512: 3.10 (3.05..3.15)`, with the runs that never reached it."""
    runs = [r for r in reached if r.global_batch == batch]
    done = sorted(r.epochs for r in runs if r.epochs is not None)
    text = f"{batch:,}: " + (f"{statistics.median(done):.2f}" if done else "not reached")
    if len(done) > 1:
        text += f" ({done[0]:.2f}..{done[-1]:.2f})"
    missed = [r.ran for r in runs if r.epochs is None]
    return text + (f", {len(missed)} of {len(runs)} not in {max(missed)} epochs" if missed and done else "")


def _seconds(seconds: float) -> str:
    """Three significant digits: 0.628 s, 62.8 s, 6,280 s."""
    decimals = max(0, 2 - math.floor(math.log10(seconds))) if seconds > 0 else 0
    return f"{seconds:,.{decimals}f} s"
