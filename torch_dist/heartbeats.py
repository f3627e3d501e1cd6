"""Which ranks are lost after a collective failed: a heartbeat of every rank in the rendezvous store."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta

import torch.distributed as dist

from launch.cluster.world import World


class Heartbeats:
    """Every rank counts up a key in the rendezvous store (rank 0's, or torchrun's agent's) every
    PERIOD seconds, on a connection of its own. After a failed collective, the ranks whose count no
    longer moves are the lost ones, and their hosts are named. Counts, not clocks: hosts' clocks
    need not agree."""

    PERIOD = 1.0
    TIMEOUT = timedelta(seconds=5)  # for every call on the store, lost()'s wait included

    def __init__(self, world: World):
        self.world, self.stop = world, threading.Event()
        self.store = dist.TCPStore(world.master_addr, world.master_port, is_master=False, timeout=self.TIMEOUT)
        self.store.set(f"mnist-dist/host/{world.rank}", world.host)
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop beating and wait for the thread: a daemon thread still inside a store call when the
        interpreter exits ends the process with SIGABRT ("terminate called without an active
        exception"), whatever the exit code was to be."""
        self.stop.set()
        self.thread.join(self.TIMEOUT.total_seconds() + self.PERIOD)

    def _beat(self) -> None:
        while not self.stop.wait(self.PERIOD):
            with contextlib.suppress(Exception):  # a lost store is what lost() reports
                self.store.add(f"mnist-dist/beat/{self.world.rank}", 1)

    def lost(self) -> str | None:
        keys = [f"mnist-dist/beat/{r}" for r in range(self.world.size)]
        try:
            before = self.store.multi_get(keys)
            time.sleep(3 * self.PERIOD)  # long enough for every live rank to beat again
            after = self.store.multi_get(keys)
            lost = [r for r in range(self.world.size) if before[r] == after[r] and r != self.world.rank]
            hosts = self.store.multi_get([f"mnist-dist/host/{r}" for r in lost])
        except Exception:
            return None  # the store is gone too: the failure's own words must do
        if not lost:
            return None
        return "lost " + ", ".join(f"rank {r} on {h.decode()}" for r, h in zip(lost, hosts))
