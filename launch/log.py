"""One logger for the CLI and both trainers: `prog: message` lines, information on stdout, warnings
and errors on stderr as `prog: error: rank R on HOST: message` (rank and host when there are several).

Entry points call `setup(prog)` once, and trainers `set_world(world)` once the rank is known; every
module logs through `get()`. Only the chief logs progress; another rank's lines carry its rank and
host too, so that interleaved output still says who spoke.
"""

from __future__ import annotations

import logging
import sys

_LOGGER = logging.getLogger("mnist_dist")
_LEVELS = {logging.WARNING: "warning: ", logging.ERROR: "error: "}


class _Format(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog, self.where, self.chief = prog, "", True

    def format(self, record: logging.LogRecord) -> str:
        where = self.where if record.levelno >= logging.WARNING or not self.chief else ""
        return f"{self.prog}: {_LEVELS.get(record.levelno, '')}{where}{record.getMessage()}"


_FORMAT = _Format("mnist-dist")


def setup(prog: str) -> logging.Logger:
    """Route the logger's lines to stdout (information) and stderr (warnings, errors) as `prog`."""
    _FORMAT.prog = prog
    _LOGGER.handlers.clear()
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False
    for stream, wanted in (
        (sys.stdout, lambda r: r.levelno < logging.WARNING),
        (sys.stderr, lambda r: r.levelno >= logging.WARNING),
    ):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_FORMAT)
        handler.addFilter(wanted)
        _LOGGER.addHandler(handler)
    return _LOGGER


def set_world(rank: int, size: int, host: str) -> None:
    """From now on, name this rank and host in the lines it writes (when it is one of several)."""
    _FORMAT.where = f"rank {rank} on {host}: " if size > 1 else ""
    _FORMAT.chief = rank == 0


def error_line(message: str) -> str:
    """The exact line `get().error(message)` writes (for a watchdog process that cannot log)."""
    return _FORMAT.format(logging.makeLogRecord({"msg": message, "levelno": logging.ERROR}))


def get() -> logging.Logger:
    return _LOGGER
