"""Every command the README and docs/ show, run as written from the repository root: a documented
command that stops working fails here. A test adds only what it needs, stated next to the command:
a short run (`SHORT`), its own log.dir, Fashion-MNIST where the command trains MNIST (this machine
cannot download it), OpenMPI's root permission where the shell is root, and OMP_NUM_THREADS=1.
Where a command's output is the feature (a sweep, the comparison), what it wrote is checked in
depth. Commands that cannot run here (a GPU cluster, two real hosts) are listed with the reason
and the test that covers them."""

import csv
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from launch import models
from launch.experiments.compare import MIB, Verdict, overall, ratio_verdict
from launch.experiments.noise import Repeats

from helpers import ROOT, check_run_dir, read_json, read_scalars
from slurm_cluster import _wait_for

pytestmark = pytest.mark.timeout(900)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHORT = "train.epochs=1 data.limit=2000"  # the run itself kept short: one epoch of 2,000 images
OFFLINE = "data.dataset=fashion-mnist"  # the configs train MNIST, which must be downloaded
AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}  # = mpirun --allow-run-as-root
FULL_EPOCH = "train.epochs=1"  # one whole epoch, where the check asserts that the model learned
SWEEP_SHORT = "--repeats 1 --workers 1,2 --warmup 2 --steps 5"  # the sweep's own options, last one wins
BENCH_SHORT = "--steps 20 --warmup 5 --repeats 1"  # a benchmark's few steps: it runs, its figures are not asserted


@dataclass(frozen=True)
class Runs:
    """The command runs here, with `add` appended and `options` before its first config override,
    after its own options: argparse takes an option's last value ({tmp}: the test's folder)."""

    add: str = ""
    options: str = ""
    expect: int = 0  # its exit code
    root_mpi: bool = False  # a plain mpirun: as root, OpenMPI's permission (AS_ROOT)
    check: Callable[[Path, str], None] | None = None  # what it wrote ({tmp}) and printed, checked in depth


@dataclass(frozen=True)
class Elsewhere:
    """The command cannot run here: why, and what covers it."""

    reason: str


def _commands() -> dict[str, str]:
    """Every command in a ```bash block of the docs, continuation lines joined and the trailing
    comment dropped -> the file that shows it."""
    found = {}
    for doc in DOCS:
        for block in re.findall(r"^```bash\n(.*?)^```", doc.read_text(), re.S | re.M):
            for command in re.sub(r"\\\n\s*", "", block).splitlines():
                command = re.sub(r"\s+#\s.*$", "", command).strip()
                if command and not command.startswith("#"):
                    found[command] = doc.name
    return found


def _learns(framework: str, backend: str | None = None, finds_data: bool = False) -> Callable[[Path, str], None]:
    """A two-worker run's directory is complete (helpers.check_run_dir) and its model reached 80% on
    Fashion-MNIST in one epoch; with `finds_data`, mnist-dist found the data once, up front."""

    def check(tmp: Path, printed: str) -> None:
        [run_dir] = [summary.parent for summary in (tmp / "runs").glob("*/summary.json")]
        summary, _ = check_run_dir(run_dir, framework, 2, 0.80)
        assert backend is None or summary["backend"] == backend
        assert not finds_data or "fashion-mnist data at /usr/share/datasets/fashion-mnist" in printed

    return check


def _benchmark_rows(loops: int) -> Callable[[Path, str], None]:
    """Every loop of an overhead benchmark measured, the reference among them at ratio 1.000."""

    def check(tmp: Path, printed: str) -> None:
        rates = re.findall(r"^\| [^|]+ \| ([\d,]+) \| [\d,]+\.\.[\d,]+ \| ([\d.]+) \|$", printed, re.M)
        assert len(rates) == loops and all(int(rate.replace(",", "")) > 0 for rate, _ in rates), printed
        assert "1.000" in [ratio for _, ratio in rates]

    return check


def _doctor_report(tmp: Path, printed: str) -> None:
    """Two ranks on this machine: their facts, the gloo sweep, no findings, the report printed."""
    [report] = [read_json(path) for path in (tmp / "runs").glob("doctor-*/doctor.json")]
    assert [r["rank"] for r in report["ranks"]] == [0, 1] and report["findings"] == []
    assert report["allreduce"]["gloo"] and report["allreduce"]["tensorflow (multi-worker)"]
    assert "Findings: none" in printed


def _scaling_sweep(tmp: Path, printed: str) -> None:
    """The torch,tf sweep: one TensorBoard curve per framework, the plot, and a CSV and table whose
    every number is its run's summary's (weak scaling: the batch per worker stays)."""
    sweep = tmp / "sweep"
    for framework in ("torch", "tf"):
        scalars = read_scalars(sweep / "tensorboard" / framework)
        for tag in ("scaling/images_per_sec", "scaling/efficiency", "scaling/images_per_sec_per_worker"):
            assert [step for step, _ in scalars[tag]] == [1, 2], (framework, tag)
        assert dict(scalars["scaling/efficiency"])[1] == pytest.approx(1.0)
    import matplotlib.image

    image = matplotlib.image.imread(sweep / "scaling.png")
    assert image.shape[0] > 200 and image.shape[1] > 400
    rows = list(csv.DictReader(open(sweep / "scaling.csv")))
    assert [(r["framework"], r["workers"]) for r in rows] == [("torch", "1"), ("torch", "2"), ("tf", "1"), ("tf", "2")]
    one = {}
    for r in rows:
        summary = read_json(sweep / "runs" / f"{r['framework']}-w{r['workers']}-r0" / "summary.json")
        assert summary["world_size"] == int(r["workers"]) and summary["batch_size_per_worker"] == 128
        assert summary["steps"] == 2 + 5  # SWEEP_SHORT's warm-up and timed steps
        assert float(r["images_per_sec_mean"]) == pytest.approx(summary["images_per_sec"], abs=0.1)
        assert float(r["peak_rss_mib_per_worker"]) == pytest.approx(summary["peak_rss_bytes_max"] / MIB, abs=0.5)
        assert float(r["step_ms"]) == pytest.approx(
            1000 * 128 * summary["world_size"] / summary["images_per_sec"], abs=0.01
        )
        one.setdefault(r["framework"], summary["images_per_sec"])
        assert float(r["efficiency"]) == pytest.approx(
            summary["images_per_sec"] / (int(r["workers"]) * one[r["framework"]]), abs=1e-3
        )
    table = (sweep / "scaling.md").read_text()
    assert "| torch | weak | 2 |" in table and "| tf | weak | 1 |" in table and "Hardware:" in table


def _check_cost(report: str, model: str, measures: list[str], runs: tuple[list[dict], list[dict]]) -> None:
    """The peak line with its inputs; the FLOPs and fraction-of-peak rows hold the runs' own summaries'
    figures; each framework's saved model, reloaded, has the parameters launch.models counts."""
    assert re.search(
        r"^Peak: [\d,.]+ GFLOP/s over \d+ CPU core\(s\), fp32: fp32 lanes \d+ \(.*/proc/cpuinfo", report, re.M
    )
    peak = next(line for line in measures if "fraction of the hardware's peak" in line)
    for summaries in runs:
        assert Repeats(tuple(s["fraction_of_peak"] for s in summaries)).span("{:.1%}") in peak
    flops = next(line for line in measures if "training FLOPs per image" in line)
    assert f"| {runs[0][0]['flops_per_image']:,} | {runs[1][0]['flops_per_image']:,} |" in flops
    n = models.parameters(model)
    assert f"torch {n:,} and tf {n:,} parameters" in report


def _comparison(tmp: Path, printed: str) -> None:
    """compare fills every field for each model from its repeats and derives every verdict from the
    runs' summaries (--target-accuracy 0.5: a target the short runs reach, so no time-to-accuracy cell
    is empty; --repeats 2: too few to tell noise from a difference, and it says so)."""
    out = tmp / "compare"
    report = (out / "compare.md").read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", report, re.M | re.S))
    assert list(sections) == ["mlp", "cnn", "Verdicts"]
    expected = {}
    for model in ("mlp", "cnn"):
        measures = [line for line in sections[model].splitlines() if line.startswith("| ") and "measure" not in line]
        assert len(measures) == 10, sections[model]
        for line in measures:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 3 and all(cells) and "n/a" not in cells, line
        torch, tf = (
            [read_json(out / "runs" / f"{fw}-{model}-r{k}" / "summary.json") for k in (0, 1)] for fw in ("torch", "tf")
        )
        assert {s["model"] for s in torch + tf} == {model}

        def runs(summaries, key, scale=1):
            return Repeats(tuple(s[key] / scale for s in summaries))

        assert (
            runs(torch, "images_per_sec").span() in sections[model]
            and f"{tf[0]['model_size_bytes']:,}" in sections[model]
        )
        _check_cost(report, model, measures, (torch, tf))
        expected[model] = {
            "TensorFlow trains faster thanks to its graph": (
                runs(torch, "images_per_sec"),
                runs(tf, "images_per_sec"),
                True,
            ),
            "PyTorch uses less memory": (
                runs(torch, "peak_rss_bytes_max", MIB),
                runs(tf, "peak_rss_bytes_max", MIB),
                True,
            ),
            "PyTorch models are smaller": (runs(torch, "model_size_bytes"), runs(tf, "model_size_bytes"), False),
            "Both are portable": None,
        }
    for claim in expected["mlp"]:
        per_model = {
            m: ratio_verdict(claim, *expected[m][claim][:2], "", expected[m][claim][2])
            if expected[m][claim]
            else Verdict(claim, "confirmed", "")
            for m in ("mlp", "cnn")
        }
        row = rf"\| {re.escape(claim)} \| \*\*{re.escape(overall(per_model))}\*\* \| "
        row += r" \| ".join(rf"\*\*{per_model[m].verdict}\*\*: [^|]*\d[^|]*" for m in ("mlp", "cnn"))
        assert re.search(row, sections["Verdicts"]), (claim, sections["Verdicts"])
    assert "2 and 2 runs cannot tell noise from a difference" in sections["Verdicts"]
    assert "Hardware:" in report and "torch 2." in report and "tensorflow 2." in report and "load average" in report
    assert (out / "compare.png").stat().st_size > 1000
    assert read_scalars(out / "runs" / "tf-cnn-r1")["eval/accuracy"]


def _horovod_sweep(tmp: Path, printed: str) -> None:
    """Horovod is a sweep variant of its own: its runs, curve and table rows beside torch's."""
    sweep = tmp / "sweep"
    assert read_json(sweep / "runs" / "horovod-w2-r0" / "summary.json")["backend"] == "horovod"
    table = (sweep / "scaling.md").read_text()
    assert "| horovod | weak | 2 |" in table and "| torch | weak | 2 |" in table
    assert [s for s, _ in read_scalars(sweep / "tensorboard" / "horovod")["scaling/images_per_sec"]] == [1, 2]


def _stated_forecast(tmp: Path, printed: str) -> None:
    """Every size to 1024 in the table and the CSV, each stated input named as stated."""
    rows = list(csv.DictReader(open(tmp / "forecast" / "forecast.csv")))
    assert [int(r["workers"]) for r in rows if r["mode"] == "weak"] == [2**k for k in range(11)]
    assert "| link between nodes (Gbit/s) | 25.0 | stated: --inter-gbit |" in printed
    assert "| overlap γ | 1.5 | stated: --overlap |" in printed


def _time_to_accuracy(tmp: Path, printed: str) -> None:
    """Both global batches trained, each one's epochs to the target in the time table."""
    assert sorted(p.name for p in tmp.glob("tta/k*")) == ["k1-s0", "k2-s0"]
    times = printed.split("### Time to 50.0% eval accuracy (weak scaling)")[1].split("###")[0]
    assert re.search(r"^\| 1 \| 128 \| 1\.00 \| [\d.,]+ s \| 1\.00x \|$", times, re.M), times
    assert re.search(r"^\| 2 \| 256 \| 1\.00 \| [\d.,]+ s \| [\d.]+x \|$", times, re.M), times


_GPU_SLURM = Elsewhere("a Slurm cluster with GPUs; test_slurm.py submits the same templates to a local cluster")
_TWO_HOSTS = Elsewhere(
    "two real hosts; the testbed block below runs the same on two testbed hosts, test_multihost.py every launcher"
)
_TESTBED = "testbed"  # a block of docs/several-nodes.md, run as one script below

COMMANDS = {
    # README.md
    "make demo": Runs(),
    "make test": Elsewhere("the test suite itself: .ci/run runs it"),
    ". .venv/bin/activate": Runs("&& command -v mnist-dist torchrun python"),
    "mnist-dist data --dataset fashion-mnist": Runs(),
    "mnist-dist data --dataset mnist --dir /shared/mnist": Runs("--dir {tmp}/mnist", expect=3),  # offline
    "python -m torch_dist.train --config configs/mlp.yaml data.dataset=fashion-mnist train.epochs=3": Runs(SHORT),
    "torchrun --standalone --nproc_per_node=2 -m torch_dist.train --config configs/mlp.yaml": Runs(
        f"{SHORT} {OFFLINE}"
    ),
    "mpirun -np 2 python -m torch_dist.train --config configs/cnn.yaml": Runs(f"{SHORT} {OFFLINE}", root_mpi=True),
    "srun -n 8 python -m torch_dist.train --config configs/cnn.yaml": Elsewhere(
        "a Slurm allocation of 8 tasks; test_slurm.py runs srun on a local cluster"
    ),
    "python -m tf_dist.train --config configs/mlp.yaml dist.cpu_devices=2": Runs(f"{SHORT} {OFFLINE}"),
    "torchrun --standalone --nproc_per_node=2 -m tf_dist.train --config configs/mlp.yaml": Runs(f"{SHORT} {OFFLINE}"),
    "mpirun -np 2 python -m tf_dist.train --config configs/mlp.yaml": Runs(
        f"{FULL_EPOCH} {OFFLINE}", root_mpi=True, check=_learns("tf")
    ),
    "tensorboard --logdir runs": Runs(),  # a server: up and answering, then stopped
    "mnist-dist run --framework torch --launcher torchrun --nproc 2 --config configs/mlp.yaml data.dataset=fashion-mnist": Runs(
        SHORT
    ),
    "mnist-dist run --framework tf    --launcher slurm --nodes 2 --nproc 4 --gpus-per-node 4 --config configs/cnn.yaml --dry-run": Runs(),
    "mnist-dist config --framework tf --nproc 2 --config configs/mlp.yaml": Runs(),
    # docs/configuration.md
    "mnist-dist config --framework tf --nproc 2 --config configs/mlp.yaml dist.compression=fp16": Runs(expect=2),
    # docs/fault-tolerance.md
    "mnist-dist run --framework torch --launcher torchrun --nodes 1:2 --max-restarts 3 --hosts node1,node2 --node-rank 0 "
    "--config configs/cnn.yaml log.run_name=elastic1": _TWO_HOSTS,
    "mnist-dist run --framework torch --launcher slurm --nodes 1:2 --nproc 4 --gpus-per-node 4 --config configs/cnn.yaml": _GPU_SLURM,
    # docs/launching.md
    "mnist-dist run --framework torch --launcher local    --nproc 2 --config configs/mlp.yaml data.dataset=fashion-mnist": Runs(
        SHORT
    ),
    "mnist-dist run --framework tf    --launcher torchrun --nproc 4 --config configs/cnn.yaml --dry-run": Runs(),
    "mnist-dist run --framework tf    --launcher mpirun   --nproc 2 --config configs/mlp.yaml": Runs(
        f"{FULL_EPOCH} {OFFLINE}", check=_learns("tf", finds_data=True)
    ),
    "mnist-dist run --framework torch --launcher slurm    --nodes 2 --nproc 4 --gpus-per-node 4 --config configs/cnn.yaml --wait": _GPU_SLURM,
    "mnist-dist data --dataset mnist --dir /shared/data/mnist": Runs("--dir {tmp}/mnist", expect=3),  # offline
    "mnist-dist run --framework torch --launcher slurm --nodes 2 --nproc 4 --gpus-per-node 4 --cpus-per-task 8 "
    "--partition gpu --account myproj --time 00:30:00 --setup 'module load cuda/12.4' "
    "--setup 'source ~/mnist-dist/.venv/bin/activate' "
    "--config configs/cnn.yaml data.dir=/shared/data/mnist log.dir=/shared/runs train.epochs=10": _GPU_SLURM,
    "mnist-dist run --framework tf --launcher slurm --nodes 2 --nproc 4 --gpus-per-node 4 --cpus-per-task 8 "
    "--partition gpu --config configs/cnn.yaml data.dir=/shared/data/mnist log.dir=/shared/runs": _GPU_SLURM,
    "mnist-dist run --framework torch --launcher slurm --template mpi --mpi-launcher srun --nodes 2 --nproc 4 "
    "--gpus-per-node 4 --config configs/cnn.yaml data.dir=/shared/data/mnist": _GPU_SLURM,
    # docs/performance.md
    "mnist-dist sweep --framework torch,tf --workers 1,2,4 --mode weak --repeats 3 --warmup 120 --steps 100 "
    "--config configs/mlp.yaml data.dataset=synthetic train.threads=1": Runs(
        options=f"{SWEEP_SHORT} --out {{tmp}}/sweep", check=_scaling_sweep
    ),
    "mnist-dist compare --config configs/mlp.yaml data.dataset=fashion-mnist train.epochs=3": Runs(
        SHORT, options="--out {tmp}/compare --target-accuracy 0.5 --repeats 2", check=_comparison
    ),
    ".venv/bin/mnist-dist sweep --testbed loopback,10g,1g --framework torch,tf --workers 1,2 "
    "--config configs/mlp.yaml data.dataset=synthetic train.threads=1": Elsewhere(
        "makes testbeds for minutes; test_sweep.py runs it with two profiles and one repeat"
    ),
    "mnist-dist forecast runs/torch-mlp-mnist-w1-4711 runs/torch-mlp-mnist-w2-4712 --doctor runs/doctor-4710": Elsewhere(
        "the user's runs and doctor; test_forecast.py calibrates from a real run"
    ),
    "mnist-dist forecast --name resnet50 --parameters 25.6e6 --compute-ms 200 --batch 64 --per-node 8 --intra-gbit 1200 "
    "--inter-gbit 25 --overlap 1.5 --target 0.9": Runs(options="--out {tmp}/forecast", check=_stated_forecast),
    "mnist-dist sweep --testbed loopback,1g,100m --forecast --framework torch,tf --workers 1,2,3 "
    "--config configs/mlp.yaml data.dataset=synthetic train.threads=1": Elsewhere(
        "makes testbeds for minutes; test_sweep.py runs it for both frameworks on two profiles, "
        "benchmarks/forecast_testbed.py in full"
    ),
    "python benchmarks/run_all.py": Elsewhere(
        "two minutes even with --quick; its benchmarks run here as written, briefly, and in test_benchmarks.py"
    ),
    "python benchmarks/forecast_testbed.py": Elsewhere(
        "makes testbeds for ~25 minutes (root); test_sweep.py runs its sweep with --forecast on two profiles"
    ),
    "python benchmarks/time_to_accuracy.py": Runs(
        options="--epochs 1 --workers 1,2 --seeds 1 --target 0.5 --out {tmp}/tta", check=_time_to_accuracy
    ),
    "python benchmarks/torch_overhead.py": Runs(BENCH_SHORT, check=_benchmark_rows(2)),
    "python benchmarks/tf_overhead.py": Runs(BENCH_SHORT, check=_benchmark_rows(3)),  # model.fit, tf.function, tf_dist
    "python benchmarks/gpu.py": Elsewhere(
        "an NVIDIA GPU (benchmarks/results/gpu-h200.md); test_benchmarks.py runs it as written on a machine "
        "without one (one line, exit 2) and end to end with --device cpu"
    ),
    "mnist-dist doctor --nproc 2": Runs(add="log.dir={tmp}/runs", check=_doctor_report),
    "mnist-dist doctor --launcher slurm --nodes 4 --nproc 8 --gpus-per-node 8 --partition gpu": Elsewhere(
        "a Slurm cluster with GPUs; test_slurm.py runs the doctor as a job on a local cluster"
    ),
    "mnist-dist doctor --hosts node1,node2,node3 --node-rank 0": Elsewhere(
        "three hosts; test_doctor.py runs it on three testbed hosts, one slow link and one wrong name among them"
    ),
    "mnist-dist diff runs/torch-cnn-mnist-w16-4711 runs/torch-cnn-mnist-w16-5123": Elsewhere(
        "two of the user's runs; test_diff.py diffs two real runs"
    ),
    "mnist-dist forecast runs/torch-cnn-mnist-w1-4711 --doctor runs/doctor-4710 --per-node 8 --intra-gbit 2400": Elsewhere(
        "the user's run and doctor; test_forecast.py calibrates from a real run"
    ),
    "mnist-dist sweep --framework torch --workers 1,2,4 --baseline last-week/scaling.csv --fail-below 0.9": Elsewhere(
        "an earlier sweep's scaling.csv; test_sweep.py holds a real sweep against baselines above and below it"
    ),
    # docs/several-nodes.md
    "mnist-dist run --framework torch --launcher torchrun --nodes 2 --node-rank 0 --master-addr node1 --nproc 4 --config configs/cnn.yaml": _TWO_HOSTS,
    "mnist-dist run --framework torch --launcher torchrun --nodes 2 --node-rank 1 --master-addr node1 --nproc 4 --config configs/cnn.yaml": _TWO_HOSTS,
    "torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=static --master-addr=node1 --master-port=29400 --node-rank=0 "
    "-m torch_dist.train --config configs/cnn.yaml": _TWO_HOSTS,
    "mnist-dist run --framework tf --hosts node1,node2 --node-rank 0 --nproc 1 --config configs/mlp.yaml": _TWO_HOSTS,
    "mnist-dist run --framework tf --hosts node1,node2 --node-rank 1 --nproc 1 --config configs/mlp.yaml": _TWO_HOSTS,
    """TF_CONFIG='{"cluster":{"worker":["node1:23456","node2:23456"]},"task":{"type":"worker","index":0}}' """
    "python -m tf_dist.train --config configs/mlp.yaml": _TWO_HOSTS,
    "mnist-dist run --framework torch --launcher mpirun --hosts node1,node2 --nproc 4 --config configs/cnn.yaml": _TWO_HOSTS,
    "tag=$(mnist-dist testbed up 2)": _TESTBED,
    "mnist-dist testbed exec $tag node2 -- hostname": _TESTBED,
    "mnist-dist testbed exec $tag node1 -- .venv/bin/mnist-dist run --framework tf --hosts node1,node2 --node-rank 0 "
    "data.dataset=synthetic &": _TESTBED,
    "mnist-dist testbed exec $tag node2 -- .venv/bin/mnist-dist run --framework tf --hosts node1,node2 --node-rank 1 "
    "data.dataset=synthetic": _TESTBED,
    "mnist-dist testbed down $tag": _TESTBED,
    """mnist-dist testbed exec $tag node1 -- env OMPI_MCA_plm_rsh_agent="$PWD/.venv/bin/mnist-dist testbed rsh $tag" """
    ".venv/bin/mnist-dist run --framework torch --launcher mpirun --hosts node1,node2 --nproc 2 --config configs/mlp.yaml "
    "data.dataset=synthetic": _TESTBED,
    # docs/trainers.md
    "make horovod": Elsewhere(".ci/run runs it before the suite"),
    "horovodrun -np 2 -H localhost:2 python -m torch_dist.train --config configs/mlp.yaml dist.backend=horovod": Runs(
        f"{FULL_EPOCH} {OFFLINE}", check=_learns("torch", "horovod")
    ),
    "mpirun -np 2 python -m torch_dist.train --config configs/mlp.yaml dist.backend=horovod": Runs(
        f"{FULL_EPOCH} {OFFLINE}", root_mpi=True, check=_learns("torch", "horovod")
    ),
    "mnist-dist run --framework torch --launcher horovodrun --nproc 2 --config configs/mlp.yaml": Runs(
        f"{SHORT} {OFFLINE}"
    ),
    "mnist-dist sweep --framework torch,horovod --workers 1,2 --config configs/mlp.yaml data.dataset=synthetic": Runs(
        options=f"{SWEEP_SHORT} --out {{tmp}}/sweep", check=_horovod_sweep
    ),
}
RUNNABLE = [command for command, how in COMMANDS.items() if isinstance(how, Runs)]


def test_every_documented_command_is_run_here_or_says_why_not():
    documented = _commands()
    assert set(documented) - set(COMMANDS) == set(), "documented commands this test does not know"
    assert set(COMMANDS) - set(documented) == set(), "commands this test knows that the docs no longer show"


def _environment(how: Runs) -> dict[str, str]:
    """The shell of a user who followed the README (the virtual environment's tools first), with
    one OpenMP thread per process: the suite runs two tests at a time on two cores."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    if how.root_mpi and os.geteuid() == 0:
        env.update(AS_ROOT)
    return env


@pytest.mark.parametrize("command", RUNNABLE)
def test_documented_command_works_as_written(tmp_path, command):
    how = COMMANDS[command]
    if "horovod" in command and importlib.util.find_spec("horovod") is None:
        pytest.skip("Horovod is not installed: build it with `make horovod` (.ci/run does)")
    if command.startswith("tensorboard"):
        return _serves(command, tmp_path)
    trains = "train" in command or " run " in f" {command} " or "sweep" in command or "compare" in command
    extra = how.add.format(tmp=tmp_path) + (f" log.dir={tmp_path}/runs" if trains else "")
    words = command.split(" ")
    first = next((i for i, word in enumerate(words) if re.match(r"[\w.]+=", word)), len(words))
    words.insert(first, how.options.format(tmp=tmp_path))
    shell = " ".join(filter(None, [*words, extra]))
    out = subprocess.run(
        ["bash", "-c", shell],
        cwd=ROOT,
        env=_environment(how),
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    try:
        assert out.returncode == how.expect, f"{shell}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        if how.expect:  # a refusal is one line naming the problem and its fix
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        if how.check:
            how.check(tmp_path, out.stdout)
    finally:
        if command == "make demo":
            for run_dir in (ROOT / "runs").glob("demo-*"):
                shutil.rmtree(run_dir)


def _serves(command: str, tmp_path: Path) -> None:
    """TensorBoard, started as written, answers on its default port; then it is stopped."""
    (tmp_path / "runs").mkdir()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=tmp_path,
        env=_environment(Runs()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _answers("http://localhost:6006/") or proc.poll() is not None, 120, "TensorBoard", 0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_testbed_block_works_as_written(tmp_path, testbeds_removed):
    """docs/several-nodes.md's testbed block, then its mpirun line, as one script: the TensorFlow
    pair of runs and the cross-host mpirun run train, and `down` removes the testbed."""
    doc = (ROOT / "docs" / "several-nodes.md").read_text()
    blocks = [b for b in re.findall(r"^```bash\n(.*?)^```", doc, re.S | re.M) if "$tag" in b]
    script = re.sub(r"\\\n\s*", "", "".join(blocks))
    runs = f"{SHORT} log.dir={tmp_path}/runs"  # the commands' own data, as written
    lines = []
    for line in script.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if "mnist-dist run" in line:  # the test's overrides at the end, before a trailing &
            line = re.sub(r"(\s*&)?$", lambda m: f" {runs}{m[0]}", line, count=1)
        lines.append(line)
    down = next(line for line in lines if "testbed down" in line)
    lines.remove(down)
    lines.append(down)  # the mpirun line needs the testbed: it comes before `down`
    out = subprocess.run(
        ["bash", "-ec", "\n".join(["set -o pipefail", *lines[:-1], "wait", lines[-1]])],
        cwd=ROOT,
        env=_environment(Runs()),
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "node2" in out.stdout.splitlines()[0]  # `exec $tag node2 -- hostname`
    summaries = sorted(p.parent.name for p in (tmp_path / "runs").glob("*/summary.json"))
    assert len(summaries) == 2, summaries  # the TensorFlow pair's run and the mpirun run
