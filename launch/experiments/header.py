"""What every report says first: the machine its runs ran on and the versions they ran with."""

from __future__ import annotations

import math
import os

from launch.cluster.environment import cpu_model
from launch.outputs.summary import Summary


def hardware(summaries: list[Summary] = ()) -> str:
    """The CPU model and core count; with the runs' summaries, the GPU each ran on and its TF32 mode
    (the driver, CUDA and NCCL are in the versions line)."""
    gpus = sorted({(s.versions["gpu"], s.tf32) for s in summaries if "gpu" in s.versions})
    return "; ".join(
        [f"{cpu_model()}, {os.cpu_count()} cores", *(f"GPU {g}, TF32 {'on' if on else 'off'}" for g, on in gpus)]
    )


def versions_line(summaries: list[Summary]) -> str:
    merged: dict[str, str] = {}
    for s in summaries:
        merged.update(s.versions)
    return ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))


def num(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"
