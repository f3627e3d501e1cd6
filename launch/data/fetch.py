"""Download one file from a list of mirrors: SHA-256 verified, retried, atomic, once per node.

Many ranks may start on one node together. A file lock beside the destination lets one of them
download while the others wait; a temp file renamed into place means no reader ever sees half a file.
A mirror cannot fill the disk or hold a run forever: no more than the file's known size is read, and
all attempts together end at a deadline. The lock says who holds it, for a waiter that gives up; in
a shared data folder a symlink planted as the lock is not followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from launch.atomic_files import temp_file
from launch.errors import DataError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Limits:
    """How long and how much: per read, per mirror, for every attempt together, and the file's size."""

    timeout: float = 30.0  # seconds without a byte
    retries: int = 3  # per mirror
    backoff: float = 1.0
    deadline: float = 600.0  # seconds for every mirror and retry together; also the longest wait for the lock
    size: int | None = None  # the file's known length: no mirror may send more


LIMITS = Limits()


def fetch(urls: list[str], dest: Path, sha256: str, limits: Limits = LIMITS) -> Path:
    """Make `dest` hold the file with this SHA-256, downloading it from the first mirror that works.

    Transient failures (timeouts, dropped connections, HTTP errors) are retried `retries` times per
    mirror; a checksum mismatch or an oversized file moves straight to the next mirror. Raises
    DataError listing each mirror's last failure when none worked, or when the deadline passed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(f"{dest}.lock")
    try:
        with _locked(lock, limits.deadline):
            if dest.exists() and sha256_of(dest) == sha256:
                return dest  # another rank, or an earlier run, already fetched it
            failures = []
            ends = time.monotonic() + limits.deadline
            for url in urls:
                reason = _fetch_from(url, dest, sha256, limits, ends)
                if reason is None:
                    return dest
                failures.append(f"{url}: {reason}")
    finally:
        # No lock file left in the data folder. Removing it under another rank's lock is harmless:
        # every download lands by an atomic rename, checked against its SHA-256.
        with contextlib.suppress(OSError):
            if not lock.is_symlink():
                lock.unlink()
    raise DataError(f"could not download {dest.name}: " + "; ".join(failures))


@contextlib.contextmanager
def _locked(lock: Path, wait: float):
    """Hold `lock` (flock: freed when its holder dies); after `wait` seconds, say who holds it."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise DataError(f"{lock}: cannot use it as the download's lock ({exc.strerror}): remove it") from None
    try:
        ends = time.monotonic() + wait
        while not _try_lock(fd):
            if time.monotonic() > ends:
                raise DataError(
                    f"{lock} is held by {_holder(fd)} for more than {wait:g}s: wait for that download, "
                    f"or end that process (or set data.dir to a folder of your own)"
                )
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    try:
        who = json.loads(os.pread(fd, 4096, 0))
        return f"pid {who['pid']} on {who['host']} (uid {os.fstat(fd).st_uid})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"another process (uid {os.fstat(fd).st_uid})"


def _fetch_from(url: str, dest: Path, sha256: str, limits: Limits, ends: float) -> str | None:
    """Try one mirror until `ends` (time.monotonic()); None on success, else the last reason it failed."""
    reason = "not tried"
    for attempt in range(limits.retries):
        if attempt:
            time.sleep(limits.backoff * attempt)
        if time.monotonic() >= ends:
            return f"{reason}; then the download's deadline ({limits.deadline:g}s) passed"
        try:
            tmp, got = _download_to_temp(url, dest, limits, ends)
        except _TooLarge as exc:
            return str(exc)  # the mirror serves another file: not worth a retry
        except (OSError, HTTPException, urllib.error.URLError) as exc:
            reason = _describe(exc)
            continue
        if got != sha256:
            tmp.unlink()
            return f"SHA-256 mismatch (got {got[:12]}…, expected {sha256[:12]}…)"
        os.replace(tmp, dest)
        return None
    return reason


class _TooLarge(OSError):
    pass


def _download_to_temp(url: str, dest: Path, limits: Limits, ends: float) -> tuple[Path, str]:
    """Stream `url` into a temp file beside `dest` (same filesystem, so the rename is atomic)."""
    digest = hashlib.sha256()
    fd, tmp = temp_file(dest.parent, f".{dest.name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=limits.timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read1(_CHUNK), b""):
                received += len(chunk)
                if limits.size is not None and received > limits.size:
                    raise _TooLarge(f"sent more than the file's {limits.size:,} bytes")
                if time.monotonic() > ends:
                    raise TimeoutError(
                        f"the download's deadline ({limits.deadline:g}s) passed after {received:,} bytes"
                    )
                out.write(chunk)
                digest.update(chunk)
            if expected is not None and received != int(expected):
                raise ConnectionError(f"connection closed after {received} of {expected} bytes")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
