"""Files that are whole or absent: written to a temp file beside the target, synced, then renamed,
so a reader (or a resume after a kill) sees the old file or the complete new one, never a part."""

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
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
