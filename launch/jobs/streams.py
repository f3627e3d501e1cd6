"""What a launcher program (torchrun, mpirun, horovodrun) prints, as its user reads it, and the
exit code of a stop.

Every rank's lines pass as they come, and so do the launcher's own until a stop: this command was
signalled, or a rank said it checkpointed a requested stop. After that the launcher's lines only
tell the stop again, as a failure (torchrun's SIGTERM traceback and failure summary, mpirun's
"returned a non-zero exit code" block): they go to a file under log.dir instead. A failure keeps
every line, where torchrun's summary names the rank that died and its exit code or signal.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from launch.atomic_files import append_only, own_folder
from launch.jobs import children
from launch.signals import PREEMPTED

STOPPED = re.compile(r"stop requested: checkpointed step \d+")  # the chief's line (launch.run.loop)
CTRL_C = 128 + signal.SIGINT


class LauncherOutput:
    """Pumps a launcher's stdout and stderr, each to ours, holding back its own lines after a stop."""

    def __init__(self, proc: subprocess.Popen, rank_line: str, held_in: Path):
        self.rank_line, self.held_in = re.compile(rank_line), held_in
        self.checkpointed = False  # a rank said every rank stopped at a checkpoint
        self._lock = threading.Lock()
        self._pumps = [
            threading.Thread(target=self._pump, args=(proc.stdout, sys.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, sys.stderr), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def join(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=10)

    def _pump(self, source, sink) -> None:
        for line in source:
            if self.rank_line.match(line):
                self.checkpointed = self.checkpointed or bool(STOPPED.search(line))
            elif self.checkpointed or children.stopped_by():
                self._hold(line)
                continue
            sink.write(line)
            sink.flush()

    def _hold(self, line: str) -> None:
        with self._lock, append_only(own_folder(self.held_in.parent) / self.held_in.name) as held:
            held.write(line)


def exit_code(code: int, checkpointed: bool) -> int:
    """The command's exit code: a stop at which every rank checkpointed is PREEMPTED (75), or 130
    when Ctrl-C asked for it, whatever the launcher made of its ranks' 75 (torchrun: 1)."""
    if checkpointed or code == PREEMPTED:
        return CTRL_C if children.stopped_by() == signal.SIGINT else PREEMPTED
    return code
