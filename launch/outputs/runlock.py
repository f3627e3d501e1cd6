"""One live run per run directory: a lock file beside it, held by the chief for the run's life.

The lock is flock(2) on `log.dir/.<run name>.lock` (Linux NFS clients map it to NFS locks): the
kernel drops it when its holder dies, so a lock file whose lock is free was left by a run that
is gone, and is taken over. The file says who holds it, for the message that refuses a second run.
In a shared log.dir the lock file must be the user's own, and a symlink there is never followed
(it would have the chief truncate its target).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from launch import log
from launch.errors import UserError


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir, self.path = run_dir, lock_path(run_dir)
        self.fd: int | None = None

    def try_acquire(self) -> dict | None:
        """Take the lock: None when taken, else who holds it (host, pid)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = _open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                return holder
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it on release as we opened it: lock the new file
        left = _read_holder(fd)
        if left:
            log.get().info(
                f"{self.path}: taking over the lock of pid {left.get('pid')} on {left.get('host')}, which is gone"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode(), 0)
        self.fd = fd
        return None

    def acquire(self) -> None:
        holder = self.try_acquire()
        if holder is not None:
            raise UserError(
                f"{self.run_dir} is in use by a live run (pid {holder.get('pid')} on "
                f"{holder.get('host')}): wait for it to end, or choose another log.run_name"
            )

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiting run then makes a fresh file
            os.close(self.fd)
            self.fd = None


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if not path.is_symlink():
            raise
        raise UserError(f"{path} is a symlink, not a run's lock: remove it, or choose another log.run_name") from exc
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        os.close(fd)
        raise UserError(
            f"{path} belongs to uid {owner}, not you (uid {os.geteuid()}): another user's run or a planted file; "
            "choose another log.run_name or log.dir"
        )
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
