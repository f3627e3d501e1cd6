"""The download path, against a real HTTP server on 127.0.0.1 serving MNIST-format files."""

import dataclasses
import fcntl
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from launch.data import datasets as data_mod
from launch.data.datasets import download_dataset, load_dataset
from launch.data.fetch import Limits, fetch
from launch.errors import DataError

from helpers import ROOT, Mirror, fake_mnist, idx_files, sha256

FILES = idx_files(fake_mnist())
SUMS = {name: sha256(content) for name, content in FILES.items()}
FAST = Limits(timeout=5, retries=2, backoff=0.01)


def tamper(content: bytes) -> bytes:
    middle = len(content) // 2
    return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :]


@pytest.fixture
def mirror_of(monkeypatch):
    """Point the mnist dataset at local mirrors serving FILES (with optional faults)."""

    def make(*mirrors):
        monkeypatch.setitem(data_mod.MIRRORS, "mnist", [m.url for m in mirrors])
        monkeypatch.setitem(data_mod.CHECKSUMS, "mnist", SUMS)
        monkeypatch.setitem(data_mod.SIZES, "mnist", {name: len(content) for name, content in FILES.items()})

    return make


def test_download_verifies_and_loads(tmp_path, mirror_of, monkeypatch):
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "none"))
    with Mirror(FILES) as m:
        mirror_of(m)
        data = load_dataset("mnist")  # nothing local: downloads into the cache
        assert sorted(m.requests) == sorted(FILES)
        np.testing.assert_array_equal(data.train_labels, fake_mnist()["train_labels"])
        assert data.source == str(tmp_path / "cache" / "mnist")
        load_dataset("mnist")  # second time: found in the cache, no request
        assert len(m.requests) == len(FILES)
    leftovers = [p.name for p in (tmp_path / "cache" / "mnist").iterdir() if p.name.endswith(".part")]
    assert leftovers == []


def test_wrong_checksum_falls_over_to_next_mirror(tmp_path, mirror_of):
    tampered = dict(FILES)
    tampered["train-labels-idx1-ubyte.gz"] = tamper(FILES["train-labels-idx1-ubyte.gz"])
    with Mirror(tampered) as bad, Mirror(FILES) as good:
        mirror_of(bad, good)
        paths = download_dataset("mnist", tmp_path / "d", FAST)
        assert bad.requests.count("train-labels-idx1-ubyte.gz") == 1  # a mismatch is not retried
        assert "train-labels-idx1-ubyte.gz" in good.requests
    assert paths["train_labels"].read_bytes() == FILES["train-labels-idx1-ubyte.gz"]


def test_wrong_checksum_everywhere_is_an_error_and_leaves_nothing(tmp_path, mirror_of):
    tampered = {name: tamper(content) for name, content in FILES.items()}
    with Mirror(tampered) as bad:
        mirror_of(bad)
        with pytest.raises(DataError, match="SHA-256 mismatch"):
            download_dataset("mnist", tmp_path / "shared" / "mnist", FAST)  # neither folder there before
        assert not (tmp_path / "shared").exists()  # nothing made is left, as `mnist-dist data --dir` left it
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("the user's")
        with pytest.raises(DataError, match="SHA-256 mismatch"):
            download_dataset("mnist", tmp_path / "mine", FAST)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]  # a folder that was there stays


def test_dropped_connection_is_retried_then_reported(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    with Mirror(FILES, drop={name}) as m:
        with pytest.raises(DataError) as err:
            fetch([m.url + name], tmp_path / name, SUMS[name], FAST)
        assert m.requests.count(name) == FAST.retries
    assert "could not download train-images-idx3-ubyte.gz" in str(err.value)
    assert not (tmp_path / name).exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_dropped_then_good_mirror(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    with Mirror(FILES, drop={name}) as flaky, Mirror(FILES) as good:
        fetch([flaky.url + name, good.url + name], tmp_path / name, SUMS[name], FAST)
    assert (tmp_path / name).read_bytes() == FILES[name]


def test_http_error_is_reported(tmp_path):
    with Mirror({}) as m, pytest.raises(DataError, match="HTTP 404"):
        fetch([m.url + "x.gz"], tmp_path / "x.gz", "0" * 64, FAST)


# A rank: imports first, then waits for one line on stdin, so that all start fetching together.
RANK = f"""
import hashlib, sys
from pathlib import Path
from launch.data.fetch import Limits, fetch
url, dest, digest = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sys.stdin.readline()
fetch([url], dest, digest, {FAST!r})
print(hashlib.sha256(dest.read_bytes()).hexdigest())
"""


def test_many_ranks_download_once(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    dest = tmp_path / name
    with Mirror(FILES) as m:
        cmd = [sys.executable, "-c", RANK, m.url + name, str(dest), SUMS[name]]
        ranks = [
            subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)
        ]
        for rank in ranks:
            rank.stdin.write("go\n")
            rank.stdin.flush()
        outs = [rank.communicate(timeout=60) for rank in ranks]
        assert m.requests.count(name) == 1
    assert [out.strip() for out, _ in outs] == [SUMS[name]] * 4
    assert sorted(os.listdir(tmp_path)) == [name]  # and no lock file left behind


def test_a_mirror_that_sends_more_than_the_file_s_size_is_cut_off_and_not_retried(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    with (
        Mirror(FILES) as m,
        pytest.raises(DataError, match=f"sent more than the file's {len(FILES[name]) - 1:,} bytes"),
    ):
        fetch([m.url + name], tmp_path / name, SUMS[name], dataclasses.replace(FAST, size=len(FILES[name]) - 1))
    assert m.requests.count(name) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_mirror_that_trickles_ends_at_the_deadline(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    with Mirror(FILES, trickle={name}) as m, pytest.raises(DataError, match=r"deadline \(1\.5s\) passed"):
        fetch([m.url + name], tmp_path / name, SUMS[name], dataclasses.replace(FAST, deadline=1.5))
    assert list(tmp_path.iterdir()) == []


def test_a_held_download_lock_is_waited_for_then_named(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    holder = os.open(tmp_path / f"{name}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    os.write(holder, json.dumps({"host": "login2", "pid": 4242, "since": 0}).encode())
    try:
        with (
            Mirror(FILES) as m,
            pytest.raises(DataError, match=r"held by pid 4242 on login2 \(uid \d+\) for more than 1s"),
        ):
            fetch([m.url + name], tmp_path / name, SUMS[name], dataclasses.replace(FAST, deadline=1))
        assert m.requests == []
    finally:
        os.close(holder)


def test_a_symlink_planted_as_the_download_lock_is_not_followed(tmp_path):
    name = "train-images-idx3-ubyte.gz"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / f"{name}.lock").symlink_to(victim)
    with Mirror(FILES) as m, pytest.raises(DataError, match="cannot use it as the download's lock"):
        fetch([m.url + name], tmp_path / name, SUMS[name], FAST)
    assert victim.read_text() == "precious"


def test_every_dataset_is_fetched_over_https_first():
    for dataset, mirrors in data_mod.MIRRORS.items():
        schemes = [url.split(":")[0] for url in mirrors]
        assert schemes == sorted(schemes, key=lambda s: s != "https") and schemes[0] == "https", dataset
        assert set(data_mod.SIZES[dataset]) == set(data_mod.CHECKSUMS[dataset])
