"""The processes a command starts (a launcher, the ranks, sweep points): none outlives the command.

Each starts in its own session, so a terminal's Ctrl-C reaches this process only, and gets SIGTERM
from the kernel when this process dies, even by SIGKILL (launch.signals.end_with_parent); a rank
asks the same of its launcher (launch.run.worker). Inside
`forwarding()`, SIGINT, SIGTERM and SIGHUP to this process go on as SIGTERM to the process group
of every child still running (the child and what it started there): a worker stops at a common
step with a checkpoint (launch.run.loop), torchrun and mpirun stop their ranks. The command keeps
waiting for them, and says how it was stopped. A second signal kills them.

`wait` waits for a child and then for the rest of its process group: a SIGTERM'd horovodrun
exits at once and leaves its mpirun and ranks to finish their checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from launch import signals

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 60  # for what a child leaves in its group; then it is killed
_started: list[subprocess.Popen] = []
_received: list[int] = []


def popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    parent = os.getpid()
    signals.libc()
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: signals.end_with_parent(parent), **kwargs)
    _started.append(proc)
    return proc


def wait(proc: subprocess.Popen) -> int:
    """`proc`'s exit code (128 + N for signal N) once it and everything left in its group ended."""
    code = proc.wait()
    settle(proc)
    return shell_status(code)


def shell_status(code: int) -> int:
    """A return code as a shell reports it: Popen's -N for signal N is 128 + N."""
    return code if code >= 0 else 128 - code


def settle(proc: subprocess.Popen) -> None:
    """Wait until nothing of `proc`'s process group runs (processes this one cannot wait for:
    orphans reparented elsewhere), killing what is left after GRACE_S."""
    deadline = time.monotonic() + GRACE_S
    while _group_running(proc.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        time.sleep(0.1)


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (zombies aside, which wait for their new parent)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(group) == pgid:
            return True
    return False


def stopped_by() -> int | None:
    """The signal that asked this command to stop, or None."""
    return _received[0] if _received else None


def forwarding():
    """Inside, a signal to this process goes on to the children (the module's docstring)."""
    return signals.handling(FORWARDED, _forward)


def _forward(signum, frame) -> None:
    stop = signal.SIGKILL if _received else signal.SIGTERM
    _received.append(signum)
    for proc in _started:
        if proc.returncode is None:  # not proc.poll(): that would reap a child another wait() expects
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, stop)  # its group: horovodrun dies on SIGTERM but leaves mpirun running
