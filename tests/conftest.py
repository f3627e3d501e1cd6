import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty data cache: nothing leaks from ~/.cache or between tests."""
    monkeypatch.setenv("MNIST_DIST_DATA", str(tmp_path / "cache"))
    yield


@pytest.fixture
def venv_bin():
    return Path(sys.executable).parent


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real private Slurm cluster (munged + slurmctld + slurmd) for the session; always stopped."""
    from slurm_cluster import LocalSlurm, binaries_present

    if not binaries_present():
        pytest.skip("SLURM BINARIES ABSENT: install slurm-wlm and munge (make test and .ci/run do) "
                    "to run the sbatch tests")
    # munged needs every folder above its socket to be traversable by all: pytest's are private
    root = Path(tempfile.mkdtemp(prefix="mnist-dist-slurm-"))
    cluster = LocalSlurm(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
