"""A run continues on another number of workers: real trainer processes stop (a PREEMPT file in the run
directory, taken at the first logging interval or at the end of the first epoch) and resume with W'
workers. Every rank records the training-set indices of its batches (tests/sample_log.py); the test
rebuilds what the final model was trained on and checks each epoch took every sample once."""

from pathlib import Path

import pytest

from launch.data.shard import steps_per_epoch

import sample_log
from helpers import check_every_sample_once, read_json, run, train_cmd

pytestmark = pytest.mark.timeout(900)
N, BATCH, LR = 1000, 32, 0.01  # 1000 is not divisible by 3: the dropped tail is exercised too
COMMON = [
    "data.dataset=synthetic",
    f"data.limit={N}",
    f"train.batch_size={BATCH}",
    "train.epochs=2",
    "train.optimizer=sgd",
    f"train.lr={LR}",
    "train.lr_scaling=linear",
    "train.threads=1",
    "log.progress=never",
    "log.run_name=r",
]
MID_EPOCH_STOP = 5  # log.interval: the first interval ends at step 5 of a >= 11-step epoch


def attempt(tmp_path: Path, module: str, workers: int, *overrides: str):
    launcher = "torchrun" if workers > 1 else "single"
    cmd = train_cmd(module, launcher, workers, [f"log.dir={tmp_path}", *COMMON, *overrides])
    return run(cmd, cwd=tmp_path, timeout=600, env=sample_log.env(tmp_path / "samples"))


def stop_and_resume(tmp_path: Path, module: str, before: int, after: int, mid_epoch: bool):
    """Run with `before` workers until the stop, then resume with `after`; return the resumed output."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "PREEMPT").touch()  # seen at the first interval's end: step 5, or the epoch's end
    stopped = attempt(tmp_path, module, before, f"log.interval={MID_EPOCH_STOP if mid_epoch else 1000}")
    # PREEMPTED (75) from the trainer itself; torchrun reports its workers' non-zero exit as 1
    assert stopped.returncode == (75 if before == 1 else 1), stopped.stdout[-2000:] + stopped.stderr[-3000:]
    assert "stop requested: checkpointed step" in stopped.stdout
    resumed = attempt(tmp_path, module, after, "checkpoint.resume=true")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    return resumed


CASES = [(2, 1, True), (1, 2, False), (2, 3, True), (3, 2, False)]


@pytest.mark.parametrize("module", ["torch_dist.train", "tf_dist.train"])
@pytest.mark.parametrize(
    "before,after,mid_epoch", CASES, ids=[f"{b}to{a}-{'mid-epoch' if m else 'epoch-end'}" for b, a, m in CASES]
)
def test_resume_on_another_world_size_trains_every_sample_once(tmp_path, module, before, after, mid_epoch):
    resumed = stop_and_resume(tmp_path, module, before, after, mid_epoch)
    stop = MID_EPOCH_STOP if mid_epoch else steps_per_epoch(N // before, BATCH)
    position = stop * BATCH * before if mid_epoch else N  # an epoch's end passes its dropped tail too
    assert f"(in epoch 1, step {stop}, sample {position} of {N}) on {after} worker(s), not {before}" in resumed.stdout
    rest = steps_per_epoch((N - position) // after, BATCH)
    steps = stop + rest + steps_per_epoch(N // after, BATCH)

    summary = read_json(tmp_path / "r" / "summary.json")
    assert summary["steps"] == steps and summary["epochs"] == 2 and summary["world_size"] == after
    assert [(h["world_size"], h["steps"], h["global_batch_size"], h["lr"]) for h in summary["world_size_history"]] == [
        (before, [0, stop], BATCH * before, LR * before),
        (after, [stop, steps], BATCH * after, LR * after),
    ]
    assert [e["epoch"] for e in read_json(tmp_path / "r" / "history.json")["epochs"]] == [1, 2]
    first_epoch_dropped = (N - position) % after if mid_epoch else N % before
    check_every_sample_once(tmp_path / "samples", steps, {0: first_epoch_dropped, 1: N % after}, N)
    assert optimizer_lr(tmp_path / "r" / "checkpoints", module) == pytest.approx(LR * after)  # not the checkpoint's

    if (before, after) == (2, 1):  # a finished run stays as it is when asked to resume again
        files = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
        again = attempt(tmp_path, module, 1, "checkpoint.resume=true")
        assert again.returncode == 0 and "already finished (2 of 2 epochs" in again.stdout, again.stderr[-3000:]
        assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == files


def optimizer_lr(folder: Path, module: str) -> float:
    """The learning rate in the run's last checkpoint, as the optimizer held it."""
    if module == "torch_dist.train":
        import torch

        from launch.outputs.checkpoints import latest

        state = torch.load(latest(folder, "torch"), weights_only=True)
        return state["optimizer"]["param_groups"][0]["lr"]
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(folder))
    [name] = [name for name, _ in tf.train.list_variables(path) if "learning_rate" in name]
    return float(tf.train.load_checkpoint(path).get_tensor(name))


def test_two_to_two_resume_equals_an_uninterrupted_run(tmp_path):
    whole = attempt(tmp_path, "torch_dist.train", 2, "log.run_name=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    stop_and_resume(tmp_path, "torch_dist.train", 2, 2, mid_epoch=True)
    a, b = (read_json(tmp_path / name / "summary.json") for name in ("whole", "r"))
    assert a["steps"] == b["steps"] and b["final_eval_loss"] == pytest.approx(a["final_eval_loss"], rel=1e-5)
