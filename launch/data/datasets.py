"""Datasets: find MNIST-format files (or download them), load and check them, or make synthetic ones.

Lookup order for `mnist` and `fashion-mnist`: the explicit folder (`data.dir` / `--dir`) alone
when one is given, downloading into it when it lacks the files; else
  1. the cache: $MNIST_DIST_DATA/<dataset>, else $XDG_CACHE_HOME (~/.cache)/mnist-dist/<dataset>,
  2. system dataset packages: <each of $XDG_DATA_DIRS>/datasets/<dataset>, where Debian's
     `dataset-fashion-mnist` puts its files (/usr/share/datasets/fashion-mnist),
  3. download from the known mirrors into the cache.
A folder counts when it holds the four IDX files (gzipped or not) or `<dataset>.npz`.

The files' content is checked against the dataset's published checksums (MNIST and Fashion-MNIST
files have the same names): a user's own MNIST-format data needs data.custom=true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from launch.data.fetch import LIMITS, Limits, fetch, sha256_of
from launch.data.formats import IMAGE_SHAPE, NUM_CLASSES, check_split, read_idx, read_npz
from launch.errors import DataError

SPLIT_FILES = {  # role -> IDX file name without .gz
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the gzipped files the public mirrors serve (the upstream releases).
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    # https first; the original S3 website has no https, so it is the last resort (the SHA-256 still holds)
    "fashion-mnist": [
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}
# Their lengths in bytes (LeCun's page; Zalando's release): no mirror may send more
SIZES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": 26421880,
        "train-labels-idx1-ubyte.gz": 29515,
        "t10k-images-idx3-ubyte.gz": 4422102,
        "t10k-labels-idx1-ubyte.gz": 5148,
    },
}
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

# SHA-256 of each array's bytes (the IDX file after its header), from the published files: it holds
# for files decompressed or recompressed (Debian's are) and for an .npz of the same arrays.
CONTENT_CHECKSUMS = {
    "fashion-mnist": {
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}
# MNIST's content checksums are not known here (its files cannot be fetched offline): its
# published .gz files (CHECKSUMS) and Keras' mnist.npz are checked as files, other forms by label counts.
NPZ_CHECKSUMS = {"mnist": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}
LABEL_COUNTS = {  # per class, train then test
    "mnist": (
        (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ),
    "fashion-mnist": ((6000,) * 10, (1000,) * 10),
}
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

SYNTHETIC_SIZES = (60_000, 10_000)


@dataclass(frozen=True)
class Dataset:
    name: str
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # the folder or file it was read from, or "synthetic(seed=…)"
    sha256: str = ""  # of the content used (after data.limit): part of a run's fingerprint
    check: str = ""  # how the files were checked: published checksums, label counts, or data.custom

    def info(self) -> dict:
        return {"sha256": self.sha256, "source": self.source, "check": self.check}


def cache_root() -> Path:
    if os.environ.get("MNIST_DIST_DATA"):
        return Path(os.environ["MNIST_DIST_DATA"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "mnist-dist"


def system_dirs(dataset: str) -> list[Path]:
    """Where system packages lay a dataset out: <data dir>/datasets/<name> for each XDG data dir."""
    bases = os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    return [Path(base) / "datasets" / dataset for base in bases.split(":") if base]


def search_dirs(dataset: str, explicit: str | Path | None) -> list[Path]:
    dirs = [Path(explicit)] if explicit else []
    return dirs + [cache_root() / dataset] + system_dirs(dataset)


def find_files(folder: Path, dataset: str) -> dict[str, Path] | Path | None:
    """The dataset's files in `folder`: role -> IDX path, or the .npz path, or None."""
    idx = {}
    for role, stem in SPLIT_FILES.items():
        found = next((folder / n for n in (stem + ".gz", stem) if (folder / n).is_file()), None)
        if found is None:
            break
        idx[role] = found
    if len(idx) == len(SPLIT_FILES):
        return idx
    npz = folder / f"{dataset}.npz"
    return npz if npz.is_file() else None


def locate(dataset: str, explicit: str | Path | None = None, *, download: bool = True) -> dict[str, Path] | Path:
    """Find the dataset's files in the lookup order, downloading them as the last resort."""
    looked = [Path(explicit)] if explicit else search_dirs(dataset, None)
    for folder in looked:
        found = find_files(folder, dataset)
        if found is not None:
            return found
    target = Path(explicit) if explicit else cache_root() / dataset
    reason = "downloads disabled"
    if download:
        try:
            return download_dataset(dataset, target)
        except DataError as exc:
            reason = str(exc)
    places = ", ".join(str(p) for p in looked)
    raise DataError(
        f"{dataset} not found (looked in: {places}) and not downloadable ({reason}). Fixes: "
        f"point data.dir at a folder with the four IDX files or {dataset}.npz; "
        f"run `mnist-dist data --dataset {dataset} --dir {target}` where there is internet (then copy {target} "
        "here); or train offline on data.dataset=synthetic, or on data.dataset=fashion-mnist with Debian's "
        "dataset-fashion-mnist package"
    )


def download_dataset(dataset: str, folder: Path, limits: Limits = LIMITS) -> dict[str, Path]:
    """Download the four gzipped IDX files into `folder`, verified against CHECKSUMS. A download
    that fails leaves no folder it created (one a file landed in stays)."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    paths = {}
    try:
        for role, stem in SPLIT_FILES.items():
            name = stem + ".gz"
            urls = [base + name for base in MIRRORS[dataset]]
            capped = dataclasses.replace(limits, size=SIZES[dataset][name])
            paths[role] = fetch(urls, folder / name, CHECKSUMS[dataset][name], capped)
    except DataError:
        for made in missing:  # deepest first; rmdir removes only what is still empty
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    return paths


def load_files(dataset: str, files: dict[str, Path] | Path, custom: bool = False) -> Dataset:
    """The dataset from its files, checked to be `dataset`'s published data unless `custom`."""
    if isinstance(files, Path):
        arrays = read_npz(files)
        train = check_split(arrays["x_train"], arrays["y_train"], f"{files} (train)")
        test = check_split(arrays["x_test"], arrays["y_test"], f"{files} (test)")
        source = str(files)
    else:
        train = check_split(
            read_idx(files["train_images"]),
            read_idx(files["train_labels"]),
            f"{files['train_images']} + {files['train_labels'].name}",
        )
        test = check_split(
            read_idx(files["test_images"]),
            read_idx(files["test_labels"]),
            f"{files['test_images']} + {files['test_labels'].name}",
        )
        source = str(files["train_images"].parent)
    data = Dataset(dataset, *train, *test, source=source)
    digests = _digests(data)
    check = "own data (data.custom=true)" if custom else verify(data, files, digests)
    return dataclasses.replace(data, sha256=_combined(digests), check=check)


def verify(data: Dataset, files: dict[str, Path] | Path, digests: dict[str, str]) -> str:
    """How `data` was found to be the published dataset it names; DataError naming the file if not.
    `digests`: each array's SHA-256, by role."""
    known = CONTENT_CHECKSUMS.get(data.name)
    for role, digest in digests.items() if known else ():
        if digest != known[role]:
            where = files if isinstance(files, Path) else files[role]
            raise DataError(f"{where}: {_not_published(data.name, role, digest)}")
    if known:
        return "published checksums"
    paths = [files] if isinstance(files, Path) else list(files.values())
    published = {**CHECKSUMS[data.name], f"{data.name}.npz": NPZ_CHECKSUMS.get(data.name)}
    if all(published.get(p.name) == sha256_of(p) for p in paths):
        return "published checksums"
    counts = tuple(tuple(np.bincount(labels, minlength=10)) for labels in (data.train_labels, data.test_labels))
    if counts != LABEL_COUNTS[data.name]:
        other = next((TITLES[n] for n, c in LABEL_COUNTS.items() if c == counts), None)
        what = f"these are {other}'s files" if other else f"not {TITLES[data.name]}'s published files"
        raise DataError(f"{data.source}: {what} (label counts); {_FIXES}")
    return "label counts (no published checksum for this form of the files)"


_FIXES = "point data.dir at the right files, or set data.custom=true to train on your own MNIST-format data"


def _not_published(dataset: str, role: str, digest: str) -> str:
    for other, table in CONTENT_CHECKSUMS.items():
        if table[role] == digest:
            return f"these are {TITLES[other]}'s files, not {TITLES[dataset]}'s; {_FIXES}"
    return f"not {TITLES[dataset]}'s published {role.replace('_', ' ')} (SHA-256 {digest[:12]}…); {_FIXES}"


def _digests(data: Dataset) -> dict[str, str]:
    """Each array's SHA-256, by role."""
    return {role: hashlib.sha256(np.ascontiguousarray(getattr(data, role)).data).hexdigest() for role in SPLIT_FILES}


def _combined(digests: dict[str, str]) -> str:
    """One checksum of the four arrays as trained on."""
    return hashlib.sha256("".join(digests[role] for role in SPLIT_FILES).encode()).hexdigest()


def synthetic(n_train: int = SYNTHETIC_SIZES[0], n_test: int = SYNTHETIC_SIZES[1], seed: int = 0) -> Dataset:
    """Seeded MNIST-shaped data: each class is a fixed random template plus noise, so it is learnable.

    Vectorised: no Python loop per sample.
    """
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(NUM_CLASSES, *IMAGE_SHAPE), dtype=np.int16)

    def split(n):
        labels = rng.integers(0, NUM_CLASSES, size=n, dtype=np.uint8)
        noise = rng.integers(-96, 97, size=(n, *IMAGE_SHAPE), dtype=np.int16)
        images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return images, labels

    data = Dataset("synthetic", *split(n_train), *split(n_test), source=f"synthetic(seed={seed})")
    return dataclasses.replace(data, sha256=_combined(_digests(data)), check="synthetic")


def load_dataset(
    dataset: str, folder: str | Path | None = None, limit: int | None = None, seed: int = 0, custom: bool = False
) -> Dataset:
    """The dataset named in the config, optionally cut to its first `limit` train and test samples."""
    if dataset == "synthetic":
        n_train, n_test = (min(limit, n) for n in SYNTHETIC_SIZES) if limit else SYNTHETIC_SIZES
        return synthetic(n_train, n_test, seed)
    if dataset not in MIRRORS:
        raise DataError(f"unknown dataset {dataset!r}: use one of mnist, fashion-mnist, synthetic")
    data = load_files(dataset, locate(dataset, folder), custom)
    if not limit:
        return data
    data = dataclasses.replace(
        data,
        train_images=data.train_images[:limit],
        train_labels=data.train_labels[:limit],
        test_images=data.test_images[:limit],
        test_labels=data.test_labels[:limit],
    )
    return dataclasses.replace(data, sha256=_combined(_digests(data)))
