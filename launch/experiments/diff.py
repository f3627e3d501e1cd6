"""`mnist-dist diff RUN_A RUN_B`: why two runs differ. Their throughput and accuracy side by side
with the ratio, then every config key, run fact (the launcher among them), version and host that
differs, and last the launch variables. A run is its directory (summary.json and config.yaml) or its
summary file.
"""

from __future__ import annotations

import dataclasses
import re
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
# What a launcher sets to wire up each job (ids, ports, session folders, its own plumbing): it differs
# between any two runs and explains none, so it is hidden unless asked for (`diff --all`).
WIRING = re.compile(
    r"OMPI_MCA_(ess|orte_|pmix|initial_wdir|shmem_RUNTIME_QUERY_hint)\w*|PMIX_MCA_mca_base_component_show_load_errors"
    r"|MASTER_PORT|TORCHELASTIC_(RUN_ID|ERROR_FILE)|SLURM_\w*(JOBID|JOB_ID|STEP_ID|PID|PORT|_TIME)"
)


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


def render(a: Run, b: Run, wiring: bool = False) -> str:
    """The whole comparison as text, in aligned columns; `wiring`: the launchers' own variables too."""
    rows: list = [f"A: {a.label}", f"B: {b.label}", "", ("", "A", "B", "B/A")]
    for field, (label, form) in MEASURES.items():
        x, y = getattr(a.summary, field), getattr(b.summary, field)
        rows.append((label, form.format(x), form.format(y), f"{y / x:.3f}" if x else "-"))
    sections = {
        "config": (a.config, b.config),
        "run": (_facts(a.summary), _facts(b.summary)),
        "versions": (a.summary.versions, b.summary.versions),
        "hosts": (_hosts(a.summary), _hosts(b.summary)),
        "environment": (_variables(a.summary, wiring), _variables(b.summary, wiring)),
    }
    recorded = {"environment": (bool(a.summary.environment), bool(b.summary.environment))}
    for name, (x, y) in sections.items():
        rows += ["", *_section(name, x, y, recorded.get(name))]
    hidden = 0 if wiring else _hidden(a.summary, b.summary)
    if hidden:
        rows.append(f"  and {hidden} launcher wiring variable(s) that differ, as in any two runs (--all shows them)")
    return _aligned(rows)


def _section(name: str, a: dict, b: dict, recorded: tuple[bool, bool] | None = None) -> list:
    """What differs in one section; `recorded`: whether each run recorded it at all (else: non-empty)."""
    has_a, has_b = recorded or (bool(a), bool(b))
    if not has_a and not has_b:
        return [f"{name}: not recorded in either run"]
    keys = sorted(key for key in {*a, *b} if a.get(key, UNSET) != b.get(key, UNSET))
    if not keys:
        return [f"{name}: the same"]
    head = f"{name}: {len(keys)} differ" + (
        "" if has_a and has_b else f" (only run {'A' if has_a else 'B'} recorded it)"
    )
    return [head, *(("  " + key, _text(a.get(key, UNSET)), _text(b.get(key, UNSET)), "") for key in keys)]


def _aligned(rows: list) -> str:
    """Text lines as they are; table rows (name, A, B, ratio) in columns as wide as their widest cell."""
    rows = [_printable(row) if isinstance(row, str) else tuple(map(_printable, row)) for row in rows]
    table = [row for row in rows if isinstance(row, tuple)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [
        row
        if isinstance(row, str)
        else f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}".rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    """`text` with what a terminal would act on (escape sequences, bells) spelled out: a summary.json
    may come from anyone."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _facts(summary: Summary) -> dict:
    """What the run was, from its summary: framework, backend, world size, nodes, precision, ..."""
    values = dataclasses.asdict(summary)
    return {name: value for name, value in values.items() if name not in _NOT_FACTS}


def _variables(summary: Summary, wiring: bool) -> dict:
    env = summary.environment
    variables = {k: v for k, v in env.get("variables", {}).items() if wiring or not WIRING.fullmatch(k)}
    return {**variables, **({"cpu model": env["cpu"]} if "cpu" in env else {})}


def _hidden(a: Summary, b: Summary) -> int:
    """How many wiring variables differ between the runs."""
    x, y = (s.environment.get("variables", {}) for s in (a, b))
    return sum(1 for k in {*x, *y} if WIRING.fullmatch(k) and x.get(k, UNSET) != y.get(k, UNSET))


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
