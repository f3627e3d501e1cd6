"""Build (once) and install a Horovod wheel for the installed PyTorch: `python -m torch_dist.horovod_build`.

Horovod 0.28.1, its last release, does not build from PyPI against torch >= 2.1: its CMake files
hard-code C++14 while PyTorch's headers need C++17. This downloads the sdist, raises the standard to
17, builds the PyTorch part with Gloo and MPI (and NCCL where torch sees a GPU) and without TensorFlow
or MXNet (Horovod's TensorFlow part does not build on TensorFlow >= 2.16), and caches the wheel per
torch and Python version and GPU operations, so a second run installs in seconds. Needs cmake, a C++
compiler and OpenMPI's headers (Debian: cmake g++ libopenmpi-dev).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HOROVOD_VERSION = "0.28.1"
# horovod-0.28.1.tar.gz as PyPI serves it: pip refuses any other file (--require-hashes)
SDIST_SHA256 = "92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0"
# The files that set CMAKE_CXX_STANDARD 14 for the parts we build.
PATCHED_FILES = ("CMakeLists.txt", "horovod/torch/CMakeLists.txt")


def gpu_operations() -> str:
    """HOROVOD_GPU_OPERATIONS for the build: as set, else NCCL where torch sees a GPU (Horovod then
    all-reduces on the GPUs; the build needs CUDA's and NCCL's headers), else none: Gloo and MPI on the CPU."""
    import torch

    return os.environ.get("HOROVOD_GPU_OPERATIONS") or ("NCCL" if torch.cuda.is_available() else "")


def cache_dir(gpu_ops: str) -> Path:
    """One folder per Horovod, torch and Python version and GPU operations: a GPU build never takes a CPU wheel."""
    import torch

    root = Path(os.environ.get("MNIST_DIST_WHEELS") or Path.home() / ".cache" / "mnist-dist" / "wheels")
    name = f"horovod-{HOROVOD_VERSION}-torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    return root / (f"{name}-{gpu_ops.lower()}" if gpu_ops else name)


def build(into: Path, gpu_ops: str) -> Path:
    for tool in ("cmake", "c++", "mpicxx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"horovod_build: {tool} not found: install cmake, g++ and libopenmpi-dev")
    with tempfile.TemporaryDirectory(prefix="horovod-build-") as tmp:
        tmp = Path(tmp)
        source = _patched_source(tmp)
        # no build isolation: the extension must compile against the torch installed here
        pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")]
        _run([*pip, str(source)], env=build_env(gpu_ops))
        wheel = next((tmp / "dist").glob("horovod-*.whl"))
        into.mkdir(parents=True, exist_ok=True)
        partial = into / (wheel.name + ".part")
        shutil.copy(wheel, partial)
        os.replace(partial, into / wheel.name)  # a half-copied wheel is never taken for a cached one
        return into / wheel.name


def _patched_source(tmp: Path) -> Path:
    """Horovod's sdist unpacked in `tmp`, built as C++17 (current torch headers need it)."""
    pinned = tmp / "requirements.txt"
    pinned.write_text(f"horovod=={HOROVOD_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    download = ["download", "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r", str(pinned)]
    _run([sys.executable, "-m", "pip", *download, "-d", str(tmp)])
    with tarfile.open(next(tmp.glob("horovod-*.tar.gz"))) as sdist:
        sdist.extractall(tmp, filter="data")
    source = tmp / f"horovod-{HOROVOD_VERSION}"
    for name in PATCHED_FILES:
        path = source / name
        text, count = re.subn(r"set\(CMAKE_CXX_STANDARD 14\)", "set(CMAKE_CXX_STANDARD 17)", path.read_text())
        if not count:
            raise SystemExit(f"horovod_build: {name} no longer sets C++14; the patch needs a look")
        path.write_text(text)
    return source


def build_env(gpu_ops: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOROVOD_WITH_PYTORCH": "1",
        "HOROVOD_WITHOUT_TENSORFLOW": "1",
        "HOROVOD_WITHOUT_MXNET": "1",
        "HOROVOD_WITH_GLOO": "1",
        "HOROVOD_WITH_MPI": "1",
        "MAKEFLAGS": f"-j{os.cpu_count() or 1}",
    }
    env.pop("HOROVOD_GPU_OPERATIONS", None)
    return {**env, "HOROVOD_GPU_OPERATIONS": gpu_ops} if gpu_ops else env


def main() -> None:
    gpu_ops = gpu_operations()
    folder = cache_dir(gpu_ops)
    cached = sorted(folder.glob("horovod-*.whl"))
    wheel = _yours(cached[-1]) if cached else build(folder, gpu_ops)
    print(f"horovod_build: {'cached' if cached else 'built'} {wheel}", flush=True)
    _run([sys.executable, "-m", "pip", "install", "--quiet", str(wheel)])
    _run(
        [
            sys.executable,
            "-c",
            "import horovod, horovod.torch as hvd; hvd.init(); print('horovod', horovod.__version__, 'with', "
            "', '.join(name for name in ('gloo', 'mpi', 'nccl') if getattr(hvd, name + '_built')()))",
        ]
    )


def _yours(wheel: Path) -> Path:
    """A cached wheel is installed only where no other user could have swapped it."""
    for path in (wheel, wheel.parent):
        info = path.lstat()
        if path.is_symlink() or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise SystemExit(
                f"horovod_build: {path} is not yours alone (a symlink, another owner, or writable by others): "
                f"remove {wheel.parent} to rebuild, or set MNIST_DIST_WHEELS to a folder of your own"
            )
    return wheel


def _run(cmd: list[str], env: dict | None = None) -> None:
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(f"horovod_build: failed ({result.returncode}): {' '.join(cmd[:6])} ...")


if __name__ == "__main__":
    main()
