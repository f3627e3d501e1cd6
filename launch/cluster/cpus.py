"""The CPUs a rank may use, and the threads each worker trains with."""

from __future__ import annotations

import os

from launch.cluster.world import World
from launch.config import Config


def threads_per_worker(config: Config, world: World) -> int:
    """train.threads, else this node's cores shared evenly among its workers."""
    if config.train.threads:
        return config.train.threads
    return max(1, usable_cpus() // world.local_size)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (what Slurm, taskset or a cgroup's cpuset allow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
