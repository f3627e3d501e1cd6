"""The processes a command starts (a launcher, the ranks, sweep points): none outlives the command.

Each starts in its own session, so a terminal's Ctrl-C reaches this process only. Inside
`forwarding()`, SIGINT, SIGTERM and SIGHUP to this process go on as SIGTERM to the process group of
every child still running (the child and what it started there): a worker stops at a common step with a checkpoint (launch.loop), torchrun and mpirun stop
their ranks. The command keeps waiting for them, and says how it was stopped. A second signal
kills them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_started: list[subprocess.Popen] = []
_received: list[int] = []


def popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _started.append(proc)
    return proc


def stopped_by() -> int | None:
    """The signal that asked this command to stop, or None."""
    return _received[0] if _received else None


@contextlib.contextmanager
def forwarding():
    if threading.current_thread() is not threading.main_thread():
        yield  # (Python delivers signals to its main thread only)
        return
    replaced = {sig: signal.signal(sig, _forward) for sig in FORWARDED}
    try:
        yield
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)


def _forward(signum, frame) -> None:
    stop = signal.SIGKILL if _received else signal.SIGTERM
    _received.append(signum)
    for proc in _started:
        if proc.returncode is None:  # not proc.poll(): that would reap a child another wait() expects
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, stop)  # its group: horovodrun dies on SIGTERM but leaves mpirun running
