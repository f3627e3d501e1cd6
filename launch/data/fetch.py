"""Download one file from a list of mirrors: SHA-256 verified, retried, atomic, once per node.

Many ranks may start on one node together. A file lock beside the destination lets one of them
download while the others wait; a temp file renamed into place means no reader ever sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from filelock import FileLock

from launch.atomic_files import temp_file
from launch.errors import DataError

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    urls: list[str],
    dest: Path,
    sha256: str,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Make `dest` hold the file with this SHA-256, downloading it from the first mirror that works.

    Transient failures (timeouts, dropped connections, HTTP errors) are retried `retries` times per
    mirror; a checksum mismatch moves straight to the next mirror. Raises DataError listing each
    mirror's last failure when none worked.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(f"{dest}.lock")
    try:
        with FileLock(str(lock)):
            if dest.exists() and sha256_of(dest) == sha256:
                return dest  # another rank, or an earlier run, already fetched it
            failures = []
            for url in urls:
                reason = _fetch_from(url, dest, sha256, timeout, retries, backoff)
                if reason is None:
                    return dest
                failures.append(f"{url}: {reason}")
    finally:
        # No lock file left in the data folder. Removing it under another rank's lock is harmless:
        # every download lands by an atomic rename, checked against its SHA-256.
        lock.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name}: " + "; ".join(failures))


def _fetch_from(url, dest, sha256, timeout, retries, backoff) -> str | None:
    """Try one mirror; None on success, else the last reason it failed."""
    reason = "not tried"
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff * attempt)
        try:
            tmp, got = _download_to_temp(url, dest.parent, dest.name, timeout)
        except (OSError, HTTPException, urllib.error.URLError) as exc:
            reason = _describe(exc)
            continue
        if got != sha256:
            tmp.unlink()
            return f"SHA-256 mismatch (got {got[:12]}…, expected {sha256[:12]}…)"
        os.replace(tmp, dest)
        return None
    return reason


def _download_to_temp(url: str, folder: Path, name: str, timeout: float) -> tuple[Path, str]:
    """Stream `url` into a temp file in `folder` (same filesystem, so the rename is atomic)."""
    digest = hashlib.sha256()
    fd, tmp = temp_file(folder, f".{name}.", ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
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
