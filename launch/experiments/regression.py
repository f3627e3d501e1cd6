"""A sweep held against an earlier one: `mnist-dist sweep ... --baseline OLD/scaling.csv --fail-below 0.9`.

Points match by framework, network profile, mode and world size. A point regressed when its
throughput or its scaling efficiency is below `floor` times the baseline point's. Points with no
match, on either side, are named but decide nothing.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from launch.errors import UserError
from launch.experiments.scaling import ScalingRow

_COLUMNS = ("framework", "profile", "mode", "workers", "images_per_sec_mean", "efficiency")


@dataclass(frozen=True)
class Verdict:
    regressions: list[str]  # one line per point and measure below the floor
    unmatched: list[str]  # this sweep's points the baseline lacks
    not_run: list[str]  # the baseline's points this sweep lacks


def read_baseline(path: str) -> dict[tuple, tuple[float, float]]:
    """(framework, profile, mode, workers) -> (images/s, efficiency) from a sweep's scaling.csv."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise UserError(
            f"--baseline {path}: {exc.strerror or exc}: give the scaling.csv an earlier sweep wrote"
        ) from None
    missing = [c for c in _COLUMNS if rows and c not in rows[0]] if rows else list(_COLUMNS)
    if missing:
        raise UserError(f"--baseline {path}: not a sweep's scaling.csv (no {', '.join(missing)} column or no rows)")
    try:
        return {
            (r["framework"], r["profile"], r["mode"], int(r["workers"])): (
                float(r["images_per_sec_mean"]),
                float(r["efficiency"]),
            )
            for r in rows
        }
    except ValueError as exc:
        raise UserError(f"--baseline {path}: a row does not read as numbers ({exc})") from None


def judge(rows: list[ScalingRow], baseline: dict[tuple, tuple[float, float]], floor: float) -> Verdict:
    regressions, unmatched, seen = [], [], set()
    for row in rows:
        key = (row.framework, row.profile, row.mode, row.workers)
        name = f"{row.series} x{row.workers} ({row.mode})"
        if key not in baseline:
            unmatched.append(name)
            continue
        seen.add(key)
        if math.isnan(row.images_per_sec):
            regressions.append(
                f"{name}: every run of it failed, against the baseline's {baseline[key][0]:,.0f} images/s"
            )
            continue
        now = {"images/s": row.images_per_sec, "efficiency": row.efficiency}
        for (measure, value), before in zip(now.items(), baseline[key]):
            if before > 0 and not value >= floor * before:
                form = "{:,.0f}" if measure == "images/s" else "{:.2f}"
                noise = f" (noisy here: sd {row.spread / row.images_per_sec:.0%} of the mean)" if row.noisy else ""
                regressions.append(
                    f"{name}: {measure} {form.format(value)} = {value / before:.2f}x the baseline's "
                    f"{form.format(before)}{noise}"
                )
    not_run = [f"{f}{'-' + p if p else ''} x{n} ({m})" for (f, p, m, n) in baseline if (f, p, m, n) not in seen]
    return Verdict(regressions, unmatched, not_run)


def describe(verdict: Verdict, path: str | Path, floor: float) -> list[str]:
    """The gate's lines: what regressed, and which points had no match."""
    lines = [f"below {floor}x the baseline {path}: {line}" for line in verdict.regressions]
    if verdict.unmatched:
        lines.append(f"no baseline point for: {', '.join(verdict.unmatched)}")
    if verdict.not_run:
        lines.append(f"baseline points this sweep did not run: {', '.join(verdict.not_run)}")
    return lines
