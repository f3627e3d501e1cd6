"""Parsers for MNIST's two public file forms: IDX (gzipped or not) and Keras' `mnist.npz`.

A file that does not hold what MNIST holds (magic number, dtype, 28x28 images, labels 0-9, as many
labels as images) raises DataError naming the file; nothing half-read is ever returned.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from launch.errors import DataError

IMAGE_SHAPE = (28, 28)
MAX_BYTES = 256 << 20  # what a file may decompress to: MNIST's largest is 47 MB
NUM_CLASSES = 10
_IDX_UINT8 = 0x08


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (`.gz` or raw), as uint8 with the file's dimensions."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); delete it and fetch it again")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _IDX_UINT8:
        raise DataError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned bytes as MNIST uses")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and fetch it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path}: {state} (header {dims} needs {expected} bytes, file has {len(raw)}); delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-style `mnist.npz` (x_train, y_train, x_test, y_test)."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(member.file_size for member in archive.infolist())
        if size > MAX_BYTES:
            raise DataError(f"{path}: holds {size >> 20} MiB uncompressed, far more than MNIST: not MNIST data")
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)}; expected Keras' mnist.npz layout")
            return {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}); delete it and fetch it again") from None


def check_split(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one split's arrays look like MNIST; return them as contiguous uint8 arrays."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{where}: images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if images.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: dtypes {images.dtype}/{labels.dtype}, expected uint8 images, integer labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{where}: labels outside 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(images), np.ascontiguousarray(labels, dtype=np.uint8)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc}); delete it and fetch it again") from None
    if len(raw) > MAX_BYTES:
        raise DataError(f"{path}: decompresses to more than {MAX_BYTES >> 20} MiB, far more than MNIST: not MNIST data")
    return raw
