"""The forecast's equations (docs/performance.md derives them, with their sources).

A data-parallel step on N workers, n per node across m nodes, at a per-worker batch b:

    T(N, b) = (C(b)^γ + S(N)^γ)^(1/γ)                      overlap, as Pollux fits it (γ in [1, 10])
    C(b)    = c0 + (C1 - c0) · b / b1                      compute, linear in the batch (c0: fixed part)
    S(N)    = A(n; intra) + A(m; inter)                    hierarchical all-reduce: in the node, then across
    A(p)    = min(ring, tree)                              the collective's library picks the faster
    ring    = 2(p-1)·α + 2(p-1)/p · G/B                    Thakur, Rabenseifner and Gropp 2005
    tree    = 2⌈log2 p⌉·α + 2 · G/B                        pipelined (double) binary trees, NCCL 2.4

G: the gradient's bytes; B: a link's bandwidth; α: a message's latency. Across nodes the n workers
of a node share its link, each carrying G/n: the bandwidth term is that of one worker per node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Link:
    bytes_per_s: float
    latency_s: float


@dataclass(frozen=True)
class Cluster:
    per_node: int  # workers per node
    intra: Link  # between the workers of one node
    inter: Link  # between nodes, per node
    cores: float = 0.0  # >0: every worker shares this many cores (the testbed's hosts on one machine)
    threads: int = 1  # each worker's, for `cores`


@dataclass(frozen=True)
class Workload:
    compute_s: float  # a step's compute (forward, backward, update, data) at `batch`, on one worker
    batch: int  # per worker, where compute_s was measured
    gradient_bytes: float
    fixed_s: float = 0.0  # the part of compute_s that does not grow with the batch
    overlap: float = 1.0  # γ: 1 no overlap of collective and compute, 10 nearly full


def all_reduce_s(nbytes: float, ranks: int, link: Link) -> float:
    if ranks < 2:
        return 0.0
    ring = 2 * (ranks - 1) * link.latency_s + 2 * (ranks - 1) / ranks * nbytes / link.bytes_per_s
    tree = 2 * math.ceil(math.log2(ranks)) * link.latency_s + 2 * nbytes / link.bytes_per_s
    return min(ring, tree)


def sync_s(work: Workload, cluster: Cluster, n: int) -> float:
    per_node = min(n, cluster.per_node)
    nodes = math.ceil(n / cluster.per_node)
    return all_reduce_s(work.gradient_bytes, per_node, cluster.intra) + all_reduce_s(
        work.gradient_bytes, nodes, cluster.inter
    )


def compute_s(work: Workload, cluster: Cluster, n: int, batch: float) -> float:
    scaled = work.fixed_s + (work.compute_s - work.fixed_s) * batch / work.batch
    if cluster.cores:  # workers beyond the cores take turns on them
        return scaled * max(1.0, n * cluster.threads / cluster.cores)
    return scaled


def step_s(work: Workload, cluster: Cluster, n: int, batch: float) -> float:
    c, s, g = compute_s(work, cluster, n, batch), sync_s(work, cluster, n), work.overlap
    return (c**g + s**g) ** (1 / g)


def images_per_s(work: Workload, cluster: Cluster, n: int, batch: float) -> float:
    return n * batch / step_s(work, cluster, n, batch)


@dataclass(frozen=True)
class Point:
    workers: int
    batch: float  # per worker
    images_per_s: float
    efficiency: float  # images/s over N times one worker's at the same global batch (strong) or its own (weak)
    compute_s: float
    sync_s: float


def forecast(work: Workload, cluster: Cluster, workers: list[int], mode: str, global_batch: int = 0) -> list[Point]:
    """weak: every worker keeps `work.batch`; strong: `global_batch` split over the workers."""
    points = []
    for n in workers:
        batch = work.batch if mode == "weak" else global_batch / n
        one = images_per_s(work, cluster, 1, work.batch if mode == "weak" else global_batch)
        rate = images_per_s(work, cluster, n, batch)
        points.append(
            Point(n, batch, rate, rate / (n * one), compute_s(work, cluster, n, batch), sync_s(work, cluster, n))
        )
    return points


def bandwidth_for(target: float, work: Workload, cluster: Cluster, n: int, mode: str, global_batch: int = 0):
    """The slowest link (between nodes, or inside the one node) that gives `target` efficiency at n
    workers, in bytes/s; None where no bandwidth would (latency or compute sharing caps it)."""
    across = n > cluster.per_node

    def efficiency(bps: float) -> float:
        link = replace(cluster.inter if across else cluster.intra, bytes_per_s=bps)
        faster = replace(cluster, inter=link) if across else replace(cluster, intra=link)
        return forecast(work, faster, [n], mode, global_batch)[0].efficiency

    low, high = 1e3, 1e15
    if n < 2 or efficiency(high) < target:
        return None
    for _ in range(100):  # bisection on a log scale: efficiency grows with bandwidth
        middle = math.sqrt(low * high)
        low, high = (middle, high) if efficiency(middle) < target else (low, middle)
    return high
