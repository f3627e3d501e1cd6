"""torch_dist with dist.backend=horovod under horovodrun and mpirun (CI builds Horovod first). Training
to 80% under both launchers, and the sweep variant, are documented commands: test_documented_commands.py."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from helpers import read_json, run, train_cmd

pytestmark = pytest.mark.timeout(900)
needs_horovod = pytest.mark.skipif(
    importlib.util.find_spec("horovod") is None,
    reason="Horovod is not installed: build it with `python -m torch_dist.horovod_build` (.ci/run does)",
)
HOROVODRUN = str(Path(sys.executable).parent / "horovodrun")


def horovod_cmd(launcher: str, n: int, overrides: list[str]) -> list[str]:
    if launcher == "horovodrun":
        return [
            HOROVODRUN,
            "-np",
            str(n),
            "-H",
            f"localhost:{n}",
            *train_cmd("torch_dist.train", "single", 1, overrides),
        ]
    return train_cmd("torch_dist.train", "mpirun", n, overrides)


def hvd_train(tmp_path, launcher, n, *overrides):
    cmd = horovod_cmd(launcher, n, [f"log.dir={tmp_path}", "log.progress=never", "dist.backend=horovod", *overrides])
    return run(cmd, cwd=tmp_path, timeout=600)


@needs_horovod
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_horovod_averages_gradients_like_one_worker_with_double_batch(tmp_path, launcher):
    common = [
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.optimizer=sgd",
        "train.lr=0.1",
        "train.max_steps=12",
        "checkpoint.interval=0",
        "train.threads=1",
    ]
    two = hvd_train(tmp_path, launcher, 2, *common, "train.batch_size=32", "log.run_name=two")
    assert two.returncode == 0, two.stderr[-3000:] + two.stdout[-2000:]
    one = run(
        train_cmd(
            "torch_dist.train",
            "single",
            1,
            [f"log.dir={tmp_path}", "log.progress=never", *common, "train.batch_size=64", "log.run_name=one"],
        ),
        cwd=tmp_path,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert read_json(tmp_path / "two" / "summary.json")["backend"] == "horovod"


def test_tf_with_horovod_is_a_clear_error(tmp_path):
    out = run(
        train_cmd(
            "tf_dist.train", "single", 1, [f"log.dir={tmp_path}", "data.dataset=synthetic", "dist.backend=horovod"]
        ),
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 2 and "MultiWorkerMirroredStrategy" in out.stderr


def test_missing_horovod_is_a_clear_error(tmp_path):
    """With Horovod hidden from Python, the error says how to install it."""
    blocker = tmp_path / "block"
    (blocker / "horovod").mkdir(parents=True)
    (blocker / "horovod" / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    out = run(
        train_cmd(
            "torch_dist.train", "single", 1, [f"log.dir={tmp_path}", "data.dataset=synthetic", "dist.backend=horovod"]
        ),
        cwd=tmp_path,
        timeout=300,
        env={"PYTHONPATH": str(blocker)},
    )
    assert out.returncode == 2
    assert "Horovod is not installed" in out.stderr and "python -m torch_dist.horovod_build" in out.stderr


def test_a_gpu_build_of_horovod_gets_nccl_and_a_wheel_cache_of_its_own(monkeypatch):
    from torch_dist import horovod_build

    monkeypatch.delenv("HOROVOD_GPU_OPERATIONS", raising=False)
    assert horovod_build.gpu_operations() == ""  # this machine's torch sees no GPU: Gloo and MPI only
    assert "HOROVOD_GPU_OPERATIONS" not in horovod_build.build_env("")
    assert horovod_build.build_env("NCCL")["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    cpu, gpu = horovod_build.cache_dir(""), horovod_build.cache_dir("NCCL")
    assert gpu.parent == cpu.parent and gpu.name == cpu.name + "-nccl"
    monkeypatch.setenv("HOROVOD_GPU_OPERATIONS", "NCCL")
    assert horovod_build.gpu_operations() == "NCCL"


def test_the_horovod_sdist_is_taken_only_with_its_pinned_sha256(tmp_path, monkeypatch):
    """pip's --require-hashes: a sdist PyPI (or a mirror, or a proxy) serves with another hash is refused."""
    from torch_dist import horovod_build

    monkeypatch.setattr(horovod_build, "SDIST_SHA256", "0" * 64)
    with pytest.raises(SystemExit):
        horovod_build._patched_source(tmp_path)
    assert not list(tmp_path.glob("horovod-*"))


def test_a_cached_wheel_others_could_swap_is_not_installed(tmp_path):
    from torch_dist import horovod_build

    wheel = tmp_path / "wheels" / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")
    assert horovod_build._yours(wheel) == wheel
    wheel.parent.chmod(0o777)
    with pytest.raises(SystemExit, match="is not yours alone"):
        horovod_build._yours(wheel)
