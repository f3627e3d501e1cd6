"""The doctor's all-reduce sweep, measured alike by each framework's part (torch_dist.doctor,
tf_dist.doctor): message sizes, how many times each is timed, and bandwidth as nccl-tests defines it
(algorithm bandwidth = bytes / time; bus bandwidth = that x 2(n-1)/n, comparable across rank counts)."""

from __future__ import annotations

SIZES = [2**k for k in range(10, 23, 2)]  # 1 KiB .. 4 MiB
BUDGET_S = 0.25  # per size, after the warm-up
MOST = 20  # times a size is timed at most


def times_to_run(slowest_first: float) -> int:
    """How many timed all-reduces fit the budget, from the slowest rank's first one: the same number
    on every rank, or their collectives would not pair up."""
    return max(1, min(MOST, int(BUDGET_S / max(slowest_first, 1e-9))))


def bandwidth(nbytes: int, seconds: float, ranks: int) -> dict:
    algbw = nbytes / seconds / 1e9
    return {"bytes": nbytes, "seconds": seconds, "algbw": algbw, "busbw": algbw * 2 * (ranks - 1) / ranks}
