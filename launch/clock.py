"""Time as the run reports it: from the process's real start, and one stamp format for names.

The start is the kernel's record of when this process began, not a clock read at import: a
trainer's `startup_s` and `wall_time_s` then count the interpreter, the framework's import and
everything else that happens before the first step, whatever imports first.
"""

from __future__ import annotations

import os
import time

STAMP_FORMAT = "%Y%m%d-%H%M%S"  # run, sweep, comparison and script names


def process_start() -> float:
    """This process's start as a time.time() value."""
    try:
        fields = open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in clock ticks
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_after_boot
    except (OSError, IndexError, ValueError, AttributeError):
        return _IMPORTED  # not Linux: the earliest moment this module can know
    return time.time() - age


def stamp(when: float | None = None) -> str:
    """A local-time stamp for names, e.g. 20261201-144858."""
    return time.strftime(STAMP_FORMAT, time.localtime(when))


_IMPORTED = time.time()
