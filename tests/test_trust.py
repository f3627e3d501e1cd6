"""A run's results are its own and complete, or the run says so: run identity, the claimed run
directory and its lock, finished runs, results before the last checkpoint, and TensorBoard after a
resume. The real loop runs in this process on the numpy engine's thread ranks (tests/numpy_engine.py);
each scenario is one the issue tracker described on the old code."""

import json
import os
import re
import socket

import pytest
from tensorboard.summary.writer import event_file_writer

from launch import log
from launch.atomic_files import write_json
from launch.config import load_config
from launch.data.shard import steps_per_epoch
from launch.errors import ConfigError, UserError
from launch.jobs import slurm
from launch.outputs import runlock
from launch.run import loop, resume

from helpers import cli, read_json, read_scalars
from numpy_engine import BATCH, N, NumpyEngine, loop_config, register, run_ranks

PER_EPOCH = steps_per_epoch(N, BATCH)


@pytest.fixture(autouse=True)
def numpy_framework(monkeypatch):
    register(monkeypatch)


def config(tmp_path, *overrides):
    return loop_config(tmp_path, "train.lr=0.01", "log.run_name=exp", *overrides)


def preempted(tmp_path, *overrides, name="exp"):
    """A run stopped at step 5 with a checkpoint there, as a preemption leaves it."""
    (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / name / loop.STOP_FILE).touch()
    assert run_ranks(config(tmp_path, "log.interval=5", f"log.run_name={name}", *overrides), 1) == [loop.PREEMPTED]


def files_of(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def error_of(results) -> str:
    assert isinstance(results[0], UserError), results
    return str(results[0])


def test_a_fresh_start_on_an_unfinished_run_s_name_is_refused(tmp_path):
    preempted(tmp_path)
    before = files_of(tmp_path / "exp")
    text = error_of(run_ranks(config(tmp_path, "train.lr=0.02"), 2))
    assert "exp already holds an unfinished run: continue it with checkpoint.resume=true" in text
    assert files_of(tmp_path / "exp") == before


def test_a_resume_under_other_settings_names_the_keys(tmp_path):
    preempted(tmp_path)
    text = error_of(run_ranks(config(tmp_path, "train.lr=0.02", "train.optimizer=sgd", "checkpoint.resume=true"), 1))
    assert "np-5.json was trained with other settings (train.lr 0.01 -> 0.02; train.optimizer 'adam' -> 'sgd')" in text
    # what may change on a resume: the epochs, the world size
    assert run_ranks(config(tmp_path, "train.epochs=3", "checkpoint.resume=true"), 2) == [0, 0]
    assert read_json(tmp_path / "exp" / "summary.json")["epochs"] == 3


def test_another_run_s_checkpoints_in_a_shared_checkpoint_dir_are_refused(tmp_path):
    shared = tmp_path / "ckpt"
    preempted(tmp_path, f"checkpoint.dir={shared}", name="job1")
    # the sbatch templates: a new job's own run name, checkpoint.resume=true, the user's checkpoint.dir
    text = error_of(
        run_ranks(config(tmp_path, "log.run_name=job2", f"checkpoint.dir={shared}", "checkpoint.resume=true"), 1)
    )
    assert f"np-5.json belongs to another run ({tmp_path / 'job1'}, id " in text
    assert not (tmp_path / "job2").exists()
    fresh = error_of(run_ranks(config(tmp_path, "log.run_name=job3", f"checkpoint.dir={shared}"), 1))
    assert f"checkpoint.dir {shared} holds another run's checkpoints (np-5.json)" in fresh


def test_every_checkpoint_and_the_summary_carry_the_run_s_id(tmp_path):
    preempted(tmp_path)
    run_id = read_json(tmp_path / "exp" / "run.json")["id"]
    assert run_ranks(config(tmp_path, "checkpoint.resume=true"), 3) == [0, 0, 0]
    for path in (tmp_path / "exp" / "checkpoints").iterdir():
        assert json.loads(path.read_text())["progress"]["run"]["id"] == run_id
    summary = read_json(tmp_path / "exp" / "summary.json")
    assert summary["run_id"] == run_id
    assert summary["data"]["check"] == "synthetic" and len(summary["data"]["sha256"]) == 64


@pytest.mark.parametrize("interval", [0, 1])
def test_a_finished_run_stays_finished_however_it_is_started_again(tmp_path, interval):
    assert run_ranks(config(tmp_path, f"checkpoint.interval={interval}"), 2) == [0, 0]
    before = files_of(tmp_path)
    assert run_ranks(config(tmp_path, f"checkpoint.interval={interval}", "checkpoint.resume=true"), 1) == [0]
    text = error_of(run_ranks(config(tmp_path, f"checkpoint.interval={interval}"), 2))
    assert "exp already holds a finished run" in text
    assert files_of(tmp_path) == before  # no byte changed, no file added (the lock file is gone too)
    assert run_ranks(config(tmp_path, "log.overwrite=true", "train.epochs=1"), 1) == [0]
    assert read_json(tmp_path / "exp" / "summary.json")["epochs"] == 1


def test_a_finished_checkpoint_without_results_fails_rather_than_exits_0(tmp_path):
    assert run_ranks(config(tmp_path), 1) == [0]
    (tmp_path / "exp" / "summary.json").unlink()
    text = error_of(run_ranks(config(tmp_path, "checkpoint.resume=true"), 1))
    assert "is the run's last step, but" in text and "has no summary.json" in text
    assert run_ranks(config(tmp_path, "log.run_name=two"), 1) == [0]
    (tmp_path / "two" / "model.npy").unlink()
    text = error_of(run_ranks(config(tmp_path, "log.run_name=two", "checkpoint.resume=true"), 1))
    assert "has a summary.json but no complete model file" in text


def test_results_are_written_before_the_last_checkpoint(tmp_path, monkeypatch):
    """A run that dies writing its results resumes from the checkpoint before and writes them."""
    save_model = NumpyEngine.save_model
    monkeypatch.setattr(NumpyEngine, "save_model", lambda self, run_dir: (_ for _ in ()).throw(OSError("disk full")))
    [failed] = run_ranks(config(tmp_path), 1)
    assert isinstance(failed, OSError)
    assert sorted(p.name for p in (tmp_path / "exp" / "checkpoints").iterdir()) == [f"np-{PER_EPOCH}.json"]
    monkeypatch.setattr(NumpyEngine, "save_model", save_model)
    assert run_ranks(config(tmp_path, "checkpoint.resume=true"), 1) == [0]
    assert read_json(tmp_path / "exp" / "summary.json")["steps"] == 2 * PER_EPOCH


def test_a_second_live_run_on_one_name_is_refused_naming_the_holder(tmp_path):
    held = runlock.RunLock(tmp_path / "exp")
    assert held.try_acquire() is None
    try:
        text = error_of(run_ranks(config(tmp_path), 2))
    finally:
        held.release()
    assert f"exp is in use by a live run (pid {os.getpid()} on {socket.gethostname()})" in text
    assert not (tmp_path / "exp").exists()


def test_a_stale_lock_is_taken_over_and_said(tmp_path, capsys):
    log.setup("test")  # onto the streams capsys reads
    runlock.lock_path(tmp_path / "exp").write_text(json.dumps({"host": "gone-host", "pid": 999999}))
    assert run_ranks(config(tmp_path, "train.epochs=1"), 1) == [0]
    assert "taking over the lock of pid 999999 on gone-host, which is gone" in capsys.readouterr().out
    assert not runlock.lock_path(tmp_path / "exp").exists()


def test_default_names_taken_in_one_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "stamp", lambda t=None: "20261201-120000")
    cfg = config(tmp_path, "train.epochs=1", "log.run_name=null")
    first = tmp_path / "numpy-mlp-synthetic-w1-20261201-120000"
    held = runlock.RunLock(first)  # a run that started this second and has not made its directory yet
    assert held.try_acquire() is None
    try:
        assert run_ranks(cfg, 1) == [0]
    finally:
        held.release()
    assert run_ranks(cfg, 1) == [0]  # the name is free again
    assert run_ranks(cfg, 1) == [0]  # the name and -2 are taken
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, f"{first.name}-2", f"{first.name}-3"]


def test_tensorboard_continues_from_the_checkpoint_without_replayed_steps(tmp_path, monkeypatch):
    # TensorBoard reads a run's event files in name order: time (s), host, pid, then a counter of
    # this process's writers; restart the counter, so that the 9th and 10th writer of this test
    # process (xdist runs many tests in one) do not sort backwards.
    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(0))
    cfg = ("log.interval=10", "train.epochs=3")
    results = run_ranks(config(tmp_path, *cfg), 1, nan_at_step=PER_EPOCH + 15)  # dies in epoch 2, after a point
    assert isinstance(results[0], UserError)
    assert run_ranks(config(tmp_path, *cfg, "checkpoint.resume=true"), 1) == [0]
    steps = [step for step, _ in read_scalars(tmp_path / "exp")["train/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == 3 * PER_EPOCH
    assert len(list((tmp_path / "exp").glob("events.out.tfevents.*"))) == 2


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_renamed_into_place_get_the_mode_the_umask_gives(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_json(tmp_path / "summary.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(
    "override,words",
    [
        ("log.run_name=/etc", "log.run_name '/etc' must be one folder name"),
        ("log.run_name=..", "log.run_name '..' must be one folder name"),
        ("log.run_name=.", "log.run_name '.' must be one folder name"),
        ("log.run_name=a/b", "log.run_name 'a/b' must be one folder name"),
        ("checkpoint.dir=runs", "checkpoint.dir 'runs' must be a folder of its own, not log.dir or above it"),
        ("checkpoint.dir=/", "checkpoint.dir '/' must be a folder of its own"),
    ],
)
def test_names_that_would_escape_log_dir_are_refused_by_every_command(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(None, [override])
    assert words in cli("config", override).stderr  # the same check for `run`, `sweep`, the trainers


def test_run_wait_fails_when_the_job_left_no_summary_whatever_slurm_says(tmp_path, monkeypatch):
    """srun across hosts has exited 0 with no rank trained: COMPLETED 0:0 is not enough. (Slurm's
    answers are given here; the real cluster's success path is in test_slurm.)"""
    monkeypatch.setattr(slurm, "submit", lambda script, kept_as: "4242")
    monkeypatch.setattr(slurm, "wait", lambda job: {"JobState": "COMPLETED", "ExitCode": "0:0"})
    args = ["run", "--framework", "torch", "--launcher", "slurm", "--nproc", "2", "--wait", "data.dataset=synthetic"]
    out = cli(*args, f"log.dir={tmp_path}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "job 4242 COMPLETED with exit code 0:0" in out.stdout
    assert f"job 4242 left no {tmp_path}/torch-mlp-synthetic-w2-4242/summary.json" in out.stderr
