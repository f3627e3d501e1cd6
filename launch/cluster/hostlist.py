"""Expand Slurm host lists ("gpu-[01-03,10],cpu7") and per-node task counts ("2(x3),1").

`scontrol show hostnames` is the authority and is used wherever it runs; the parser below is the
fallback for machines without Slurm's client tools (a laptop reading a job's environment, tests).
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

_GROUP = re.compile(r"\[([^\]]*)\]")


def expand_hostlist(hostlist: str) -> list[str]:
    """Every host name in a Slurm host list, in order."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            out = subprocess.run(
                [scontrol, "show", "hostnames", hostlist], capture_output=True, text=True, timeout=10, check=True
            ).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass  # no reachable Slurm config, say: the parser below gives the same answer
    return parse_hostlist(hostlist)


def parse_hostlist(hostlist: str) -> list[str]:
    hosts = []
    for item in _split_top_level(hostlist):
        parts = _GROUP.split(item)  # literal, group, literal, group, ..., literal
        choices = [[p] if i % 2 == 0 else _expand_ranges(p, item) for i, p in enumerate(parts)]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def parse_tasks_per_node(spec: str) -> list[int]:
    """`SLURM_TASKS_PER_NODE`-style counts, one per node: "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []
    for item in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not match:
            raise ValueError(f"cannot parse tasks-per-node {spec!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def _split_top_level(hostlist: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(hostlist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0 or depth > 1:
            raise ValueError(f"unbalanced brackets in host list {hostlist!r}")
        if ch == "," and depth == 0:
            items.append(hostlist[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced brackets in host list {hostlist!r}")
    items.append(hostlist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_ranges(ranges: str, item: str) -> list[str]:
    names = []
    for part in ranges.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {part!r} in host list item {item!r}")
        width = len(lo)  # "01-03" keeps its zero padding
        names += [str(n).zfill(width) for n in range(int(lo), int(hi or lo) + 1)]
    return names
