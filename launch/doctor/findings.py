"""What `mnist-dist doctor` concludes from every rank's report: the findings, each naming its hosts,
and the report as text. Pure functions over doctor.json's content, so that each rule is tested on
made-up reports (tests/test_doctor.py) as well as on real testbed hosts.

A rank's report (`ranks[r]`): host, address (its interface's, towards the master), interface,
resolved (each node's name -> the address it resolves to on this rank's host), cpus (the CPU ids it
may run on), gpus (models it sees), node_gpus (GPUs the node's driver lists), clock_offset_s (its
clock minus rank 0's). `links[i][j]`: node i -> node j, {"gbit": ..., "rtt_ms": ...}.
"""

from __future__ import annotations

import numpy as np

REPORT = "doctor.json"  # in the doctor's folder, beside doctor.md
TF_REPORT = "doctor-tf.json"  # TensorFlow's all-reduce sweep (tf_dist.doctor), merged into REPORT
SLOW_LINK = 0.5  # a link below half a typical link's bandwidth
CLOCK_SKEW_S = 0.1  # log lines, TensorBoard wall times and deadlines across hosts disagree beyond it


def findings(report: dict) -> list[str]:
    """Every finding, one line each, naming the hosts."""
    return [
        *_slow_links(report),
        *_names_that_differ(report),
        *_too_few_cpus(report),
        *_ranks_without_gpus(report),
        *_clock_skew(report),
    ]


def _slow_links(report: dict) -> list[str]:
    """Links below half the typical fast link: the upper quartile of all links, which is the median
    when most links are healthy and stays a healthy link's speed when one slow host slows most of a
    small cluster's links (2 of every 3 with three hosts)."""
    nodes, links = report["nodes"], report["links"]
    measured = [(i, j, links[i][j]["gbit"]) for i in range(len(nodes)) for j in range(len(nodes)) if i != j]
    if len(measured) < 2:
        return []
    typical = float(np.percentile([gbit for _, _, gbit in measured], 75))
    slow = [(i, j) for i, j, gbit in measured if gbit < SLOW_LINK * typical]
    lines = [
        f"slow link {nodes[i]} -> {nodes[j]}: {links[i][j]['gbit']:.2f} Gbit/s, below half a typical link "
        f"({typical:.2f} Gbit/s)"
        for i, j in slow
    ]
    for k, node in enumerate(nodes):  # every link of one host slow: the host's own network, not the links
        own = [(i, j) for i, j, _ in measured if k in (i, j)]
        if len(nodes) > 2 and set(own) <= set(slow):
            lines.append(
                f"{node}: every link to and from it is slow: check its interface, cable, switch port or shaping"
            )
    return lines


def _names_that_differ(report: dict) -> list[str]:
    lines = []
    for name in report["nodes"]:
        seen: dict[str, list[str]] = {}
        for rank in _one_rank_per_node(report):
            seen.setdefault(rank["resolved"].get(name) or "nothing", []).append(rank["host"])
        if len(seen) > 1:
            where = "; ".join(f"{address} on {', '.join(hosts)}" for address, hosts in seen.items())
            lines.append(f"the name {name} resolves differently on different hosts: {where}")
    return lines


def _too_few_cpus(report: dict) -> list[str]:
    asked, lines = report["cpus_per_rank"], []
    for node in report["nodes"]:
        ranks = [r for r in report["ranks"] if r["host"] == node]
        usable = set().union(*(set(r["cpus"]) for r in ranks))
        if len(usable) < asked * len(ranks):
            lines.append(
                f"{node} has {len(usable)} CPU(s) for its {len(ranks)} rank(s), fewer than the "
                f"{asked * len(ranks)} asked ({asked} per rank)"
            )
    return lines


def _ranks_without_gpus(report: dict) -> list[str]:
    return [
        f"rank {r['rank']} on {r['host']} sees no GPU on a node with {r['node_gpus']} "
        f"(CUDA_VISIBLE_DEVICES={r['cuda_visible_devices']!r})"
        for r in report["ranks"]
        if r["node_gpus"] and not r["gpus"]
    ]


def _clock_skew(report: dict) -> list[str]:
    return [
        f"{r['host']}'s clock is {r['clock_offset_s'] * 1000:+.0f} ms off {report['ranks'][0]['host']}'s (rank 0)"
        for r in _one_rank_per_node(report)
        if abs(r["clock_offset_s"]) > CLOCK_SKEW_S
    ]


def _one_rank_per_node(report: dict) -> list[dict]:
    return list({r["host"]: r for r in reversed(report["ranks"])}.values())[::-1]


def render(report: dict) -> str:
    """The report as text: ranks, the link matrix, the all-reduce sweep, the findings."""
    nodes, lines = (
        report["nodes"],
        [f"# mnist-dist doctor: {len(report['ranks'])} rank(s) on {len(report['nodes'])} node(s)", ""],
    )
    lines.append("| rank | host | interface | address | CPUs | GPUs | clock vs rank 0 |")
    lines.append("|---:|---|---|---|---:|---|---:|")
    for r in report["ranks"]:
        gpus = ", ".join(r["gpus"]) or "-"
        lines.append(
            f"| {r['rank']} | {r['host']} | {r['interface']} | {r['address']} | {len(r['cpus'])} | {gpus} "
            f"| {r['clock_offset_s'] * 1000:+.1f} ms |"
        )
    if len(nodes) > 1:
        lines += ["", "TCP bandwidth, Gbit/s (round trip, ms), row -> column:", ""]
        lines.append("| from \\ to | " + " | ".join(nodes) + " |")
        lines.append("|---|" + "---:|" * len(nodes))
        for i, node in enumerate(nodes):
            cells = [
                "-" if i == j else f"{link['gbit']:.2f} ({link['rtt_ms']:.2f})"
                for j, link in enumerate(report["links"][i])
            ]
            lines.append(f"| {node} | " + " | ".join(cells) + " |")
    for backend, rows in report["allreduce"].items():
        lines += [
            "",
            f"all-reduce, {backend}, {len(report['ranks'])} ranks (bus bandwidth as nccl-tests defines it):",
            "",
        ]
        lines += ["| bytes | time (µs) | algbw (GB/s) | busbw (GB/s) |", "|---:|---:|---:|---:|"]
        lines += [f"| {x['bytes']:,} | {x['seconds'] * 1e6:,.0f} | {x['algbw']:.3f} | {x['busbw']:.3f} |" for x in rows]
    found = report["findings"]
    lines += ["", f"Findings: {len(found)}" if found else "Findings: none"]
    lines += [f"- {line}" for line in found]
    return "\n".join(lines) + "\n"
