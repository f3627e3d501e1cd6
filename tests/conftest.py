import os
import sys
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
