"""The benchmarks run end to end (a few steps): a benchmark that no longer runs is found here, not
when someone needs its numbers. Their figures are not asserted. The overhead benchmarks run as
docs/performance.md shows them, in test_documented_commands.py."""

import re
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, run


@pytest.mark.parametrize(
    "script, kernel",
    [("torch_profile.py", "aten::max_pool2d_with_indices"), ("tf_profile.py", "_MklNativeMaxPool")],
)
def test_step_profile_names_the_cnn_s_operators(tmp_path, script, kernel):
    """docs/performance.md explains the CNN's TensorFlow-vs-PyTorch gap from these profiles."""
    out = run([sys.executable, str(ROOT / "benchmarks" / script), "--model", "cnn", "--steps", "3"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^Wall time per step.*: [\d.]+ ms", out.stdout, re.M), out.stdout
    assert kernel in out.stdout, out.stdout


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line(tmp_path):
    if (
        shutil.which("nvidia-smi")
        and "GPU " in subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    ):
        pytest.skip("this machine has a GPU: the benchmark would run")
    out = run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "benchmarks/gpu.py: no GPU here (nvidia-smi lists none): run it on a GPU node, or add --device cpu "
        "to try the script itself on the CPU"
    ]


def test_gpu_benchmark_runs_every_part_on_the_cpu(tmp_path):
    """benchmarks/gpu.py is run first on a lent GPU machine with minutes to spare: here it runs end to
    end on CPUs (without torch.compile and CUDA graphs), so that the GPU run measures instead of debugging."""
    out = run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu"]
        + ["--steps", "10", "--warmup", "3", "--repeats", "1", "--workers", "1,2"],
        cwd=tmp_path,
        timeout=600,
        env={"TMPDIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not list(tmp_path.glob("mnist-dist-*")), "the sweep's temp folder is removed"
    rows = re.findall(r"^\| ([^|]+) \| ([\d,]+) \| [\d,]+\.\.[\d,]+ \| ([\d.]+) \|$", out.stdout, re.M)
    assert [name for name, _, _ in rows] == [
        *("bare", "bare+ddp", "torch_dist", "torch_dist, no DDP", "dataloader"),
        *("keras model.fit", "bare tf.function loop", "tf_dist"),
    ]
    scaling = re.findall(r"^\| (torch|tf) \| weak \| (\d) \| [\d,]+ ± \d+ \|", out.stdout, re.M)
    assert scaling == [("torch", "1"), ("torch", "2"), ("tf", "1"), ("tf", "2")], out.stdout[-3000:]


def test_a_failing_variant_is_reported_and_the_others_still_measured(capsys):
    """One variant's failure (no CUDA graphs, no compiler) costs its row only."""
    from benchmarks.common import interleave, medians

    calls = []

    def broken(r):
        calls.append(r)
        raise RuntimeError("CUDA graphs need a GPU\nsecond line")

    results = interleave({"bare": lambda r: 100.0 + r, "graph": broken}, repeats=3)
    assert results == {"bare": [100.0, 101.0, 102.0], "graph": "failed: RuntimeError: CUDA graphs need a GPU"}
    assert calls == [0] and medians(results) == {"bare": 101.0}
    assert "graph failed: RuntimeError" in capsys.readouterr().err
