"""`mnist-dist diff RUN_A RUN_B`: why two runs differ. Their throughput and accuracy side by side
with the ratio, then every config key, run fact, launch variable and version that differs, and
the hosts each ran on. A run is its directory (summary.json and config.yaml) or its summary file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from launch.errors import UserError
from launch.outputs.rundir import CONFIG_FILE, SUMMARY_FILE
from launch.outputs.summary import Summary, read_summary

MEASURES = {  # summary field -> its label and how it is printed
    "images_per_sec": ("images/s", "{:,.0f}"),
    "images_per_sec_per_worker": ("images/s per worker", "{:,.0f}"),
    "step_ms": ("step ms", "{:.2f}"),
    "startup_s": ("startup s", "{:.2f}"),
    "final_eval_accuracy": ("test accuracy", "{:.4f}"),
    "final_eval_loss": ("test loss", "{:.4f}"),
}
# what a run measured or is named by, not what decided it: compared above, or not at all
_NOT_FACTS = {*MEASURES, "versions", "environment", "ranks", "run_id", "data", "world_size_history"}
_NOT_FACTS |= {"wall_time_s", "peak_rss_bytes_max", "peak_rss_bytes_mean", "model_size_bytes", "schema_version"}
UNSET = "(unset)"


@dataclass(frozen=True)
class Run:
    label: str
    summary: Summary
    config: dict  # dotted key -> value; empty when the run's config.yaml is not beside its summary


def load_run(path: str) -> Run:
    """A run directory, or a summary.json (its config.yaml beside it, where there is one)."""
    given = Path(path)
    summary_path = given / SUMMARY_FILE if given.is_dir() else given
    if not summary_path.is_file():
        raise UserError(f"{path}: no {SUMMARY_FILE} there: give a run directory or its {SUMMARY_FILE}")
    config_path = summary_path.parent / CONFIG_FILE
    config = _flat(yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    return Run(str(path), read_summary(summary_path), config)


def render(a: Run, b: Run) -> str:
    """The whole comparison as text."""
    lines = [f"A: {a.label}", f"B: {b.label}", "", _row("", "A", "B", "B/A")]
    for field, (label, form) in MEASURES.items():
        x, y = getattr(a.summary, field), getattr(b.summary, field)
        lines.append(_row(label, form.format(x), form.format(y), f"{y / x:.3f}" if x else "-"))
    sections = {
        "config": (a.config, b.config),
        "run": (_facts(a.summary), _facts(b.summary)),
        "environment": (_variables(a.summary), _variables(b.summary)),
        "versions": (a.summary.versions, b.summary.versions),
        "hosts": (_hosts(a.summary), _hosts(b.summary)),
    }
    for name, (x, y) in sections.items():
        lines += ["", *_section(name, x, y)]
    return "\n".join(lines) + "\n"


def _section(name: str, a: dict, b: dict) -> list[str]:
    if not a and not b:
        return [f"{name}: not recorded in either run"]
    keys = sorted(key for key in {*a, *b} if a.get(key, UNSET) != b.get(key, UNSET))
    if not keys:
        return [f"{name}: the same"]
    head = f"{name}: {len(keys)} differ" + ("" if a and b else f" (only run {'A' if a else 'B'} recorded it)")
    return [head, *(_row("  " + key, _text(a.get(key, UNSET)), _text(b.get(key, UNSET))) for key in keys)]


def _facts(summary: Summary) -> dict:
    """What the run was, from its summary: framework, backend, world size, nodes, precision, ..."""
    values = dataclasses.asdict(summary)
    return {name: value for name, value in values.items() if name not in _NOT_FACTS}


def _variables(summary: Summary) -> dict:
    env = summary.environment
    return {**env.get("variables", {}), **({"cpu model": env["cpu"]} if "cpu" in env else {})}


def _hosts(summary: Summary) -> dict:
    """Each rank's host and interface: rank 3 -> node2 (eth0)."""
    return {f"rank {r['rank']}": f"{r['host']} ({r.get('interface') or '?'})" for r in summary.ranks}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _row(name: str, a: str, b: str, ratio: str = "") -> str:
    return f"{name:<32} {a:>24} {b:>24} {ratio:>7}".rstrip()
