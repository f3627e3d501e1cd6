"""Signal handlers for a block of code, put back after it; the exit code of a requested stop; and
processes that end with their parent.

Python delivers signals to its main thread only, so elsewhere (a rank that is a thread in the tests,
a library caller's worker thread) the block runs with the handlers as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterable

PREEMPTED = 75  # exit code of a rank stopped at a requested stop, checkpointed to resume
_PR_SET_PDEATHSIG = 1  # prctl(2)


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Callable):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    replaced = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, previous in replaced.items():
            signal.signal(sig, previous)


def end_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent ends, however it ends (SIGKILL, the
    OOM killer): prctl(2)'s PR_SET_PDEATHSIG. A SIGTERM'd launcher stops its ranks, a rank stops at
    a checkpoint. `parent`: the parent's pid as this process knew it, for a parent that ended first."""
    prctl = getattr(libc(), "prctl", None)
    if prctl is None:
        return  # not Linux
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, loaded before a fork: a forked child of a threaded process must not dlopen."""
    return ctypes.CDLL(None, use_errno=True)
