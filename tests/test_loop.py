"""The training loop's bookkeeping, in this process: a numpy engine (tests/numpy_engine.py) whose ranks
are threads drives the real launch.run.loop, so resume at another world size, stops at a common step,
the NaN stop, a finished run, checkpoint intervals, history, summary and TensorBoard are checked in
seconds. The trainers' own processes are tested in test_torch_dist, test_tf_dist and test_elastic."""

import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from launch import log
from launch.data.shard import steps_per_epoch
from launch.errors import UserError
from launch.outputs import checkpoints
from launch.run import loop
from launch.run.comm import gather_text
from launch.run.metrics import ALL_TAGS

import sample_log
from helpers import check_every_sample_once, read_json, read_scalars
from numpy_engine import BATCH, N, RankComm, ThreadComm, loop_config, register, run_ranks

LR = 0.01


@pytest.fixture(autouse=True)
def numpy_framework(monkeypatch, tmp_path):
    register(monkeypatch)
    monkeypatch.setattr(loop, "batch_callbacks", [])
    sample_log.install(tmp_path / "samples")


def config(tmp_path, *overrides):
    return loop_config(tmp_path, f"train.lr={LR}", "train.lr_scaling=linear", "log.run_name=r", *overrides)


CASES = [(2, 1, True), (1, 2, False), (2, 3, True), (3, 2, False), (4, 3, True), (1, 4, True)]


@pytest.mark.parametrize(
    "before,after,mid_epoch", CASES, ids=[f"{b}to{a}-{'mid-epoch' if m else 'epoch-end'}" for b, a, m in CASES]
)
def test_resume_on_another_world_size_trains_every_sample_once(tmp_path, before, after, mid_epoch):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / loop.STOP_FILE).touch()  # seen at the first interval's end: step 5, or the epoch's end
    interval = 5 if mid_epoch else 1000
    assert run_ranks(config(tmp_path, f"log.interval={interval}"), before) == [loop.PREEMPTED] * before
    assert not (tmp_path / "r" / loop.STOP_FILE).exists()
    assert run_ranks(config(tmp_path, "checkpoint.resume=true"), after) == [0] * after

    stop = interval if mid_epoch else steps_per_epoch(N // before, BATCH)
    position = stop * BATCH * before if mid_epoch else N  # an epoch's end passes its dropped tail too
    steps = stop + steps_per_epoch((N - position) // after, BATCH) + steps_per_epoch(N // after, BATCH)
    summary = read_json(tmp_path / "r" / "summary.json")
    assert summary["steps"] == steps and summary["epochs"] == 2 and summary["world_size"] == after
    assert [(h["world_size"], h["steps"], h["global_batch_size"], h["lr"]) for h in summary["world_size_history"]] == [
        (before, [0, stop], BATCH * before, LR * before),
        (after, [stop, steps], BATCH * after, LR * after),
    ]
    first_epoch_dropped = (N - position) % after if mid_epoch else N % before
    check_every_sample_once(tmp_path / "samples", steps, {0: first_epoch_dropped, 1: N % after}, N)


def test_every_rank_stops_at_the_same_step_and_checkpoints_it(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / loop.STOP_FILE).touch()  # only the chief looks; every rank must follow
    assert run_ranks(config(tmp_path, "log.interval=7"), 3) == [loop.PREEMPTED] * 3
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["np-7.json"]
    assert not (tmp_path / "r" / "summary.json").exists()


def test_a_nan_loss_stops_every_rank_naming_the_steps(tmp_path):
    results = run_ranks(config(tmp_path, "log.interval=5"), 2, nan_at_step=7)
    assert all(isinstance(r, UserError) for r in results), results
    assert "the training loss became NaN or infinite between steps 5 and 10: lower train.lr" in str(results[0])


def test_a_finished_run_resumed_again_changes_nothing(tmp_path, capsys):
    log.setup("test")  # onto the streams capsys reads
    assert run_ranks(config(tmp_path), 2) == [0, 0]
    files = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert run_ranks(config(tmp_path, "checkpoint.resume=true"), 1) == [0]
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == files
    # one that max_steps ended names max_steps, not the epochs the resume already raised
    assert run_ranks(config(tmp_path, "log.run_name=s", "train.max_steps=3"), 1) == [0]
    capsys.readouterr()
    assert run_ranks(config(tmp_path, "log.run_name=s", "train.max_steps=3", "checkpoint.resume=true"), 1) == [0]
    assert "step 3; np-3.json; raise train.max_steps to train it further" in capsys.readouterr().out


def test_checkpoints_every_interval_and_at_the_end(tmp_path):
    per_epoch = steps_per_epoch(N, BATCH)
    assert run_ranks(config(tmp_path, "train.epochs=5", "checkpoint.interval=2"), 1) == [0]
    names = sorted((tmp_path / "r" / "checkpoints").iterdir(), key=lambda p: int(p.stem.split("-")[1]))
    assert [p.name for p in names] == [f"np-{per_epoch * e}.json" for e in (2, 4, 5)]
    assert run_ranks(config(tmp_path, "log.run_name=none", "checkpoint.interval=0"), 1) == [0]
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_history_summary_and_tensorboard_describe_the_run(tmp_path):
    assert run_ranks(config(tmp_path, "train.epochs=3", "log.interval=10", "train.warmup_steps=4"), 2) == [0, 0]
    per_epoch = steps_per_epoch(N // 2, BATCH)
    history = read_json(tmp_path / "r" / "history.json")["epochs"]
    assert [(e["epoch"], e["step"]) for e in history] == [(k, k * per_epoch) for k in (1, 2, 3)]
    assert history[-1]["eval_accuracy"] > 0.9 and history[-1]["train_loss"] < history[0]["train_loss"]
    summary = read_json(tmp_path / "r" / "summary.json")
    assert (summary["framework"], summary["backend"], summary["world_size"]) == ("numpy", "threads", 2)
    assert summary["steps"] == 3 * per_epoch and summary["global_batch_size"] == 2 * BATCH
    assert summary["final_eval_accuracy"] == history[-1]["eval_accuracy"] and summary["images_per_sec"] > 0
    assert 0 < summary["startup_s"] < summary["wall_time_s"]
    host, cpus = socket.gethostname(), len(os.sched_getaffinity(0))
    assert [(r["rank"], r["host"], r["cpus"]) for r in summary["ranks"]] == [(0, host, cpus), (1, host, cpus)]
    assert all(r["threads"] >= 1 and r["images_per_sec"] > 0 for r in summary["ranks"])
    # CPU seconds of the process (both thread ranks) per second of this rank's measured steps
    assert all(0 < r["busy_cores"] <= 1.05 * cpus for r in summary["ranks"])
    assert sum(r["images_per_sec"] for r in summary["ranks"]) == pytest.approx(summary["images_per_sec"], rel=0.5)
    assert (tmp_path / "r" / "model.npy").is_file() and (tmp_path / "r" / "history.png").is_file()
    scalars = read_scalars(tmp_path / "r")
    assert set(scalars) == set(ALL_TAGS)
    intervals = sorted({*range(10, 3 * per_epoch + 1, 10), per_epoch, 2 * per_epoch, 3 * per_epoch})
    assert [step for step, _ in scalars["train/loss"]] == intervals
    assert [step for step, _ in scalars["eval/accuracy"]] == [per_epoch, 2 * per_epoch, 3 * per_epoch]


def test_another_framework_s_checkpoints_are_refused(tmp_path):
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "step-00000010.pt").touch()
    [result] = run_ranks(config(tmp_path, "checkpoint.resume=true"), 1)
    assert isinstance(result, UserError) and "holds torch checkpoints, which numpy cannot resume" in str(result)


def test_a_run_shorter_than_its_warm_up_says_so_instead_of_0_img_s(tmp_path, capsys):
    log.setup("test")  # onto the streams capsys reads
    per_epoch = steps_per_epoch(N, BATCH)
    assert run_ranks(config(tmp_path, "train.epochs=1", f"train.warmup_steps={per_epoch}"), 1) == [0]
    out = capsys.readouterr().out
    assert "0 img/s" not in out
    assert f"epoch 1/1 step {per_epoch}:" in out and "no step timed yet (this start's first" in out
    assert f"no throughput: every step of this start was warm-up (train.warmup_steps={per_epoch})" in out
    # a run that max_steps ends shows its step budget, not an epoch count it will never reach
    assert run_ranks(config(tmp_path, "log.run_name=s", "train.epochs=1000", "train.max_steps=40"), 1) == [0]
    assert f"epoch 1 step {per_epoch}/40:" in capsys.readouterr().out


@pytest.mark.parametrize("texts", [["node1", "a-much-longer-host.example.org"], ["", "x" * 80, "n"], ["nœud-ü"]])
def test_gather_text_gives_every_rank_every_rank_s_text(texts):
    """Host names travel as rows of numbers (launch.run.comm.gather_text); past 64 bytes they are cut."""
    shared = ThreadComm(len(texts))
    with ThreadPoolExecutor(len(texts)) as pool:
        got = list(pool.map(lambda r: gather_text(RankComm(shared, r), texts[r]), range(len(texts))))
    assert got == [[t[:64] for t in texts]] * len(texts)


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, capsys):
    """A checkpoint cut short (a full disk, a killed copy) is passed over, with a line naming it."""
    log.setup("test")  # onto the streams capsys reads
    per_epoch = steps_per_epoch(N, BATCH)
    assert run_ranks(config(tmp_path, "train.epochs=2", "checkpoint.interval=1"), 1) == [0]
    newest, before = checkpoints.newest_first(tmp_path / "r" / "checkpoints", "numpy")
    newest.write_text(newest.read_text()[:100])
    assert run_ranks(config(tmp_path, "train.epochs=3", "checkpoint.interval=1", "checkpoint.resume=true"), 1) == [0]
    said = "".join(capsys.readouterr())
    assert f"{newest}: not readable" in said and f"resuming from the checkpoint before it, {before.name}" in said
    assert f"resuming from {before} (after epoch 1, step {per_epoch})" in said
    history = read_json(tmp_path / "r" / "history.json")["epochs"]
    assert [(e["epoch"], e["step"]) for e in history] == [(k, k * per_epoch) for k in (1, 2, 3)]
    # the only checkpoint damaged: refused by name, nothing trained
    for path in checkpoints.newest_first(tmp_path / "r" / "checkpoints", "numpy")[1:]:
        path.unlink()
    newest = checkpoints.latest(tmp_path / "r" / "checkpoints", "numpy")
    newest.write_text("{")
    [result] = run_ranks(config(tmp_path, "train.epochs=4", "checkpoint.resume=true"), 1)
    assert isinstance(result, checkpoints.DamagedCheckpoint) and f"{newest}: not readable" in str(result)


def test_a_resume_past_max_steps_is_named_as_such(tmp_path):
    per_epoch = steps_per_epoch(N, BATCH)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / loop.STOP_FILE).touch()  # stopped, checkpointed at step 5
    assert run_ranks(config(tmp_path, "log.interval=5"), 1) == [loop.PREEMPTED]
    [result] = run_ranks(config(tmp_path, "checkpoint.resume=true", "train.max_steps=3"), 1)
    assert isinstance(result, UserError)
    assert "is at step 5, past train.max_steps=3: raise train.max_steps" in str(result)
    assert per_epoch > 5 and not (tmp_path / "r" / "summary.json").exists()
