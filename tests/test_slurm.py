"""sbatch jobs on a real local Slurm cluster: training jobs, a failing job, scancel."""

import os
import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT, live_pids_mentioning, read_json, read_scalars, run
from slurm_cluster import _wait_for

pytestmark = pytest.mark.timeout(900)
needs_fashion = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)


def submit(cluster, tmp_path, *args, timeout=600, env=None):
    cmd = [
        sys.executable,
        "-m",
        "launch",
        "run",
        "--launcher",
        "slurm",
        "--config",
        str(ROOT / "configs/mlp.yaml"),
        "--time",
        "10",
        *args,
        f"log.dir={tmp_path}",
        "log.progress=never",
    ]
    return run(cmd, cwd=tmp_path, timeout=timeout, env={"SLURM_CONF": str(cluster.conf), **(env or {})})


def job_of(out) -> str:
    return re.search(r"submitted job (\d+)", out.stdout)[1]


def run_dir_of(out) -> Path:
    return Path(re.search(r"run dir: (\S+)", out.stdout)[1])


@needs_fashion
@pytest.mark.parametrize(
    "framework,extra",
    [
        ("torch", []),
        ("tf", []),
        ("torch", ["--template", "mpi"]),
        ("tf", ["--template", "mpi", "--mpi-launcher", "srun"]),
        ("torch", ["--template", "mpi", "--mpi-launcher", "srun"]),
    ],
)
def test_two_task_job_trains_fashion_mnist(slurm_cluster, tmp_path, framework, extra):
    out = submit(
        slurm_cluster,
        tmp_path,
        "--framework",
        framework,
        "--nproc",
        "2",
        "--wait",
        *extra,
        "data.dataset=fashion-mnist",
        "train.epochs=1",
        "train.threads=1",
    )
    log = Path(re.search(r"log: +(\S+)", out.stdout)[1])
    assert out.returncode == 0, out.stdout + out.stderr + (log.read_text() if log.exists() else "")
    job = job_of(out)
    assert f"job {job} COMPLETED with exit code 0:0" in out.stdout
    summary = read_json(run_dir_of(out) / "summary.json")
    assert summary["world_size"] == 2 and summary["framework"] == framework
    assert summary["final_eval_accuracy"] >= 0.8
    scalars = read_scalars(run_dir_of(out))
    assert scalars["throughput/images_per_sec"] and all(v > 0 for _, v in scalars["throughput/images_per_sec"])
    record = slurm_cluster.job(job)
    assert record["JobState"] == "COMPLETED"
    # sbatch read the script on its stdin: no file in the (maybe shared) log.dir was ever run
    assert record["Command"] == "(null)" and list((tmp_path / "slurm").glob("*.sbatch"))


def test_failing_job_reports_failed_and_its_exit_code(slurm_cluster, tmp_path):
    # fp16 without GPUs is refused before anything is submitted (it would fail only once the job ran)
    refused = submit(slurm_cluster, tmp_path, "--framework", "tf", "--nproc", "2", "train.precision=fp16")
    assert refused.returncode == 2 and "train.precision=fp16 needs a GPU" in refused.stderr
    assert "submitted job" not in refused.stdout and not slurm_cluster.run("squeue", "-h").stdout.strip()
    # 2 tasks for 1 training sample passes the launcher's checks; the trainer refuses it (exit code 3)
    out = submit(
        slurm_cluster,
        tmp_path,
        "--framework",
        "tf",
        "--nproc",
        "2",
        "--wait",
        "data.dataset=synthetic",
        "data.limit=1",
    )
    job = job_of(out)
    assert out.returncode != 0
    assert f"job {job} FAILED" in out.stdout
    info = slurm_cluster.job(job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0"
    log = Path(info["StdOut"]).read_text()
    assert "world size 2 is larger than the training set (1 samples)" in log
    status = run(
        [sys.executable, "-m", "launch", "slurm", "status", job],
        cwd=tmp_path,
        timeout=60,
        env={"SLURM_CONF": str(slurm_cluster.conf)},
    )
    assert status.returncode == 0 and "FAILED" in status.stdout


def test_scancel_leaves_no_process_behind(slurm_cluster, tmp_path):
    out = submit(
        slurm_cluster,
        tmp_path,
        "--framework",
        "torch",
        "--nproc",
        "2",
        "data.dataset=synthetic",
        "train.epochs=1000",
        "train.threads=1",
    )
    assert out.returncode == 0, out.stderr
    job = job_of(out)
    run_dir = run_dir_of(out)
    # training has begun once the chief has written its first TensorBoard event file
    _wait_for(lambda: list(run_dir.glob("events.out.tfevents.*")), 300, "the job to start training", 0.2)
    assert len(live_pids_mentioning(str(tmp_path))) >= 2  # the torchrun agent and its workers
    slurm_cluster.run("scancel", job)
    _wait_for(lambda: slurm_cluster.job(job)["JobState"] == "CANCELLED", 60, "the job to be cancelled", 0.2)
    _wait_for(lambda: not live_pids_mentioning(str(tmp_path)), 60, "every job process to end", 0.2)


def test_preemption_signal_checkpoints_requeues_and_resumes_exactly(slurm_cluster, tmp_path):
    out = submit(
        slurm_cluster,
        tmp_path,
        "--framework",
        "torch",
        "--nproc",
        "2",
        "data.dataset=synthetic",
        "train.epochs=6",
        "train.threads=1",
    )
    assert out.returncode == 0, out.stderr
    job, run_dir = job_of(out), run_dir_of(out)
    _wait_for(lambda: list(run_dir.glob("events.out.tfevents.*")), 300, "the job to start training", 0.2)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)  # what sbatch --signal=B:USR1@60 sends
    _wait_for(lambda: slurm_cluster.job(job).get("Restarts", "0") != "0", 120, "the job to requeue itself", 0.2)
    final = _wait_for(
        lambda: (lambda i: i if i["JobState"] in ("COMPLETED", "FAILED", "CANCELLED") else None)(
            slurm_cluster.job(job)
        ),
        600,
        "the requeued job to finish",
        0.5,
    )
    log = Path(final["StdOut"]).read_text()
    assert final["JobState"] == "COMPLETED", log[-3000:]
    assert "stop requested: checkpointed step" in log and "resuming from" in log
    summary = read_json(run_dir / "summary.json")
    assert summary["steps"] == 6 * 235 and summary["restarts"] == 1  # exactly an uninterrupted run's steps
    eval_steps = [s for s, _ in read_scalars(run_dir)["eval/accuracy"]]
    assert eval_steps == [235 * k for k in range(1, 7)]  # no epoch evaluated twice


@pytest.mark.skipif(os.cpu_count() < 2, reason="binding two ranks to one CPU each needs two CPUs")
@pytest.mark.parametrize(
    "framework,template,nproc,cpus",
    [("torch", "torch", 2, 1), ("torch", "torch", 1, 2), ("tf", "tf", 2, 1), ("tf", "mpi", 1, 2)],
)
def test_each_worker_gets_the_cpus_per_task_it_asked_for(slurm_binding, tmp_path, framework, template, nproc, cpus):
    """--cpus-per-task means CPUs per worker in every template (docs/launching.md): each rank may run on
    that many, and under torchrun its node's workers share nproc times that."""
    out = submit(
        slurm_binding,
        tmp_path,
        *("--framework", framework, "--template", template, "--nproc", str(nproc), "--cpus-per-task", str(cpus)),
        "--wait",
        "data.dataset=synthetic",
        "data.limit=512",
        "train.epochs=1",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    ranks = read_json(run_dir_of(out) / "summary.json")["ranks"]
    shared = nproc if template == "torch" else 1
    assert [(r["cpus"], r["threads"]) for r in ranks] == [(cpus * shared, cpus)] * nproc


def test_doctor_runs_as_one_job_on_the_allocation(slurm_cluster, tmp_path):
    out = run(
        [sys.executable, "-m", "launch", "doctor", "--launcher", "slurm", "--nproc", "2", "--time", "5"]
        + [f"log.dir={tmp_path}"],
        cwd=tmp_path,
        timeout=600,
        env={"SLURM_CONF": str(slurm_cluster.conf)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    job = job_of(out)
    report = read_json(tmp_path / f"doctor-{job}" / "doctor.json")
    assert [r["rank"] for r in report["ranks"]] == [0, 1] and report["findings"] == []
    assert set(report["allreduce"]) == {"gloo", "tensorflow (multi-worker)"}  # a second job: TensorFlow's part
    assert "Findings: none" in out.stdout and slurm_cluster.job(job)["JobState"] == "COMPLETED"
