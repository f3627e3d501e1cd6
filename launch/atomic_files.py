"""Files that are whole or absent: written to a temp file beside the target, synced, then renamed,
so a reader (or a resume after a kill) sees the old file or the complete new one, never a part.

On a shared filesystem the writes are also safe from other users: the temp file is made with
O_EXCL (a planted name fails it) and renamed over the target, so a symlink planted at the target is
replaced, never followed; the folders written into must be the user's own (`own_folder`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from launch.errors import UserError

NEARLY_FULL = 1 << 20  # bytes: a write that failed with less free than this ran out of space


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb"):
    """A file object to write `path` with; on an error the temp file is removed and `path` is untouched."""
    fd, tmp = temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = no_space(path, exc)
        if full:
            raise UserError(full) from None
        raise


def no_space(path: Path, exc: BaseException) -> str | None:
    """What to say when `exc`, raised while writing `path`, came of a full filesystem; else None.
    A library's own writer may hide the errno (torch.save reports only "unexpected pos"), so a folder
    left with almost nothing free counts too."""
    if not isinstance(exc, Exception):
        return None
    chain, seen = [], exc
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    free = shutil.disk_usage(path.parent).free
    if not any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) for e in chain) and free >= NEARLY_FULL:
        return None
    return (
        f"no space left on {path.parent} for {path.name} ({free:,} bytes free): free some space there, "
        "or point checkpoint.dir (log.dir) elsewhere"
    )


def temp_file(folder: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """mkstemp in `folder`, with the mode the umask gives a new file: mkstemp's 0600 would keep a
    file renamed into place unreadable to the rest of the group on a shared filesystem."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _umask() -> int:
    """The process's umask, as the kernel reports it (os.umask would set it, for every thread, to read it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise OSError("no Umask line in /proc/self/status")


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def own_folder(path: Path) -> Path:
    """`path` as a folder, made if missing: refused when it is a symlink or another user's, since
    whoever owns it could swap what is written there (make the folder itself, or choose another)."""
    path.mkdir(parents=True, exist_ok=True)
    info = os.lstat(path)
    if os.path.islink(path) or info.st_uid != os.geteuid():
        what = "a symlink" if os.path.islink(path) else f"owned by uid {info.st_uid}, not you (uid {os.geteuid()})"
        raise UserError(
            f"{path} is {what}: another user could swap the files written there; choose a folder of your own"
        )
    return path


def append_only(path: Path):
    """`path` opened for appending, made if missing: refused (OSError) when it is a symlink."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666), "a")
