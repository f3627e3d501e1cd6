"""Data: parsing both MNIST forms, refusing broken files, the lookup order, synthetic data."""

import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from launch.data.datasets import load_dataset, locate, search_dirs, synthetic, system_dirs
from launch.data.formats import read_idx
from launch.errors import DataError

from conftest import ROOT
from helpers import cli, fake_mnist, idx_bytes, idx_files, write_files

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def mnist_dist(*args):
    return subprocess.run(
        [sys.executable, "-m", "launch", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = fake_mnist()
    folder = write_files(tmp_path / "d", idx_files(arrays, gz=gz))
    data = load_dataset("mnist", folder, custom=True)
    np.testing.assert_array_equal(data.train_images, arrays["train_images"])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])
    assert data.source == str(folder)


def test_npz_form(tmp_path):
    arrays = fake_mnist()
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(
        folder / "mnist.npz",
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    data = load_dataset("mnist", folder, custom=True)
    np.testing.assert_array_equal(data.train_labels, arrays["train_labels"])
    assert data.source.endswith("mnist.npz")


def _broken(tmp_path, name, content):
    files = idx_files(fake_mnist())
    files[name] = content
    return write_files(tmp_path / "broken", files) / name


GOOD = idx_files(fake_mnist())


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("train-images-idx3-ubyte.gz", GOOD["train-images-idx3-ubyte.gz"][:-200], "corrupt or truncated gzip"),
        (
            "train-images-idx3-ubyte.gz",
            gzip.compress(gzip.decompress(GOOD["train-images-idx3-ubyte.gz"])[:-28]),
            "truncated (header (120, 28, 28) needs",
        ),
        ("train-images-idx3-ubyte.gz", b"\x1f\x8bnot really gzip", "corrupt or truncated gzip"),
        ("train-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8), "IDX data type 0x0d"),
        ("train-labels-idx1-ubyte.gz", gzip.compress(b"PK\x03\x04garbage"), "not an IDX file (bad magic number)"),
        ("train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.zeros(119, np.uint8))), "120 images but 119 labels"),
        ("train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.full(120, 12, np.uint8))), "labels outside 0..9"),
        (
            "t10k-images-idx3-ubyte.gz",
            gzip.compress(idx_bytes(np.zeros((30, 32, 32), np.uint8))),
            "images have shape (30, 32, 32), expected (N, 28, 28)",
        ),
    ],
    # ids of their own: the default ones hold the gzip bytes, whose header has the time of compression,
    # so two test processes collecting a second apart would disagree on the test names
    ids=["cut-gzip", "cut-images", "not-gzip", "data-type", "magic", "label-count", "label-range", "image-shape"],
)
def test_broken_files_are_named_errors(tmp_path, name, content, message):
    path = _broken(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", path.parent)
    assert message in str(err.value)
    assert name.split("-")[0] in str(err.value)  # the message names the file


def test_broken_npz(tmp_path):
    folder = tmp_path / "n"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="mnist.npz: not a readable .npz archive"):
        load_dataset("mnist", folder)


def test_corrupt_file_is_reported_not_skipped(tmp_path, monkeypatch):
    """A corrupt file in the first folder is an error even when a later folder has good files."""
    bad = _broken(tmp_path, "train-images-idx3-ubyte.gz", b"\x1f\x8bxx").parent
    good = write_files(tmp_path / "share" / "datasets" / "mnist", idx_files(fake_mnist()))
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "share"))
    assert good in search_dirs("mnist", None)
    with pytest.raises(DataError, match="train-images"):
        load_dataset("mnist", bad)


def test_lookup_order_explicit_then_cache_then_system(tmp_path, monkeypatch):
    share = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_DIRS", f"{tmp_path / 'none'}:{share}")
    system = write_files(share / "datasets" / "mnist", idx_files(fake_mnist(seed=3)))
    assert locate("mnist", download=False)["train_images"].parent == system
    cache = write_files(tmp_path / "cache" / "mnist", idx_files(fake_mnist(seed=2)))
    assert locate("mnist", download=False)["train_images"].parent == cache
    explicit = write_files(tmp_path / "mine", idx_files(fake_mnist(seed=1), gz=False))
    assert locate("mnist", explicit, download=False)["train_images"] == explicit / "train-images-idx3-ubyte"
    # an explicit folder is the only place looked in: without the files it is an error, not the cache
    with pytest.raises(DataError, match="not found"):
        locate("mnist", tmp_path / "empty", download=False)


def test_incomplete_folder_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "nothing"))
    files = idx_files(fake_mnist())
    del files["t10k-labels-idx1-ubyte.gz"]
    folder = write_files(tmp_path / "partial", files)
    with pytest.raises(DataError, match="not found"):
        locate("mnist", folder, download=False)


def test_system_dirs_follow_xdg(monkeypatch):
    monkeypatch.delenv("XDG_DATA_DIRS", raising=False)
    assert system_dirs("fashion-mnist")[-1] == Path("/usr/share/datasets/fashion-mnist")
    monkeypatch.setenv("XDG_DATA_DIRS", "/opt/a:/opt/b")
    assert system_dirs("mnist") == [Path("/opt/a/datasets/mnist"), Path("/opt/b/datasets/mnist")]


def test_offline_with_nothing_found_lists_places_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "share"))
    monkeypatch.setattr("launch.data.datasets.MIRRORS", {"mnist": ["http://127.0.0.1:9/"]})  # discard port: refused
    with pytest.raises(DataError) as err:
        locate("mnist")
    text = str(err.value)
    for place in (tmp_path / "cache" / "mnist", tmp_path / "share" / "datasets" / "mnist"):
        assert str(place) in text
    assert (
        "data.dir" in text
        and "--data-dir" not in text
        and f"mnist-dist data --dataset mnist --dir {tmp_path / 'cache' / 'mnist'}" in text
        and "data.dataset=synthetic" in text
        and "data.dataset=fashion-mnist" in text
    )
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in text


def test_data_command_offline_error_exit_code(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "launch", "data", "--dataset", "mnist", "--no-download", "--dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 3
    assert out.stderr.startswith("mnist-dist: error: mnist not found (looked in: ")
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (make test and .ci/run install it)",
)
def test_real_fashion_mnist_from_debian():
    out = mnist_dist("data", "--dataset", "fashion-mnist", "--no-download")
    assert out.returncode == 0, out.stderr
    assert str(DEBIAN_FASHION) in out.stdout
    data = load_dataset("fashion-mnist")
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10000, 28, 28)
    assert np.bincount(data.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(data.test_labels, minlength=10).tolist() == [1000] * 10
    assert 50 < data.train_images.mean() < 100  # real pictures, not noise or zeros


def test_limit_cuts_both_splits(tmp_path):
    folder = write_files(tmp_path / "d", idx_files(fake_mnist()))
    data = load_dataset("mnist", folder, limit=50, custom=True)
    assert len(data.train_images) == 50 and len(data.test_labels) == 30


def test_synthetic_is_seeded_fast_and_learnable():
    start = time.perf_counter()
    a = synthetic(seed=7)
    elapsed = time.perf_counter() - start
    b = synthetic(seed=7)
    assert a.train_images.shape == (60000, 28, 28) and a.train_images.dtype == np.uint8
    assert a.test_labels.shape == (10000,) and a.train_labels.max() == 9
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images, synthetic(seed=8).train_images)
    # learnable: the nearest class mean classifies far above chance
    x = a.train_images[:5000].reshape(5000, -1).astype(np.float32)
    y = a.train_labels[:5000]
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    pred = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y).mean() > 0.9
    print(f"synthetic 70k samples in {elapsed:.2f}s")


def test_synthetic_via_load_dataset_respects_limit():
    data = load_dataset("synthetic", limit=1000, seed=1)
    assert len(data.train_images) == 1000 and len(data.test_images) == 1000


def test_read_idx_keeps_dimensions(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)))
    assert read_idx(path).shape == (2, 3, 4)


def test_files_of_another_dataset_are_named_for_what_they_are(tmp_path):
    """MNIST and Fashion-MNIST files have the same names: data.dir pointed at the wrong ones."""
    folder = tmp_path / "shared" / "mnist"
    shutil.copytree(DEBIAN_FASHION, folder)
    with pytest.raises(DataError, match="these are Fashion-MNIST's files"):
        load_dataset("mnist", folder)
    mine = load_dataset("mnist", folder, custom=True)  # the user's own MNIST-format data: allowed, and said
    assert mine.check == "own data (data.custom=true)"


def test_fashion_mnist_is_checked_by_content_gzipped_or_not(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in DEBIAN_FASHION.glob("*.gz"):  # Debian recompressed them: the .gz checksums differ
        (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    assert load_dataset("fashion-mnist", DEBIAN_FASHION).check == "published checksums"
    assert load_dataset("fashion-mnist", raw).sha256 == load_dataset("fashion-mnist", DEBIAN_FASHION).sha256
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x00")  # one label changed
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: not Fashion-MNIST's published train labels"):
        load_dataset("fashion-mnist", raw)


def test_decompression_is_bounded(tmp_path):
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        for _ in range(260):
            f.write(bytes(1 << 20))
    with pytest.raises(DataError, match="decompresses to more than 256 MiB"):
        read_idx(bomb)


def test_mnist_dist_run_checks_the_data_once_before_any_rank_starts(tmp_path):
    """The wrong files are one line from the command, not one per rank inside torchrun's traceback."""
    folder = tmp_path / "mnist"
    shutil.copytree(DEBIAN_FASHION, folder)
    args = ["run", "--framework", "torch", "--launcher", "torchrun", "--nproc", "2", "data.dataset=mnist"]
    out = cli(*args, f"data.dir={folder}", f"log.dir={tmp_path / 'runs'}")
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [
        f"mnist-dist: error: {folder}: these are Fashion-MNIST's files (label counts); point data.dir at the "
        "right files, or set data.custom=true to train on your own MNIST-format data"
    ]
    assert not (tmp_path / "runs").exists()
