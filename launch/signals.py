"""Signal handlers for a block of code, put back after it; the exit code of a requested stop.

Python delivers signals to its main thread only, so elsewhere (a rank that is a thread in the tests,
a library caller's worker thread) the block runs with the handlers as they are.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable

PREEMPTED = 75  # exit code of a rank stopped at a requested stop, checkpointed to resume


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
