"""tf_dist: MirroredStrategy on logical CPUs, MultiWorkerMirroredStrategy with real worker processes."""

import sys
from pathlib import Path

import numpy as np
import pytest

from launch.cluster.world import World, tf_config

from helpers import ROOT, check_run_dir, launch_prefix, read_json, read_scalars, run, train_cmd

pytestmark = pytest.mark.timeout(900)
needs_fashion = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
PROBE = str(ROOT / "tests" / "tf_probe.py")


def tf_train(tmp_path, launcher, n, *overrides, timeout=600):
    cmd = train_cmd("tf_dist.train", launcher, n, [f"log.dir={tmp_path}", "log.progress=never", *overrides])
    return run(cmd, cwd=tmp_path, timeout=timeout)


def probe(tmp_path, out: Path, launcher, n, *overrides, env=None):
    """Run tests/tf_probe.py: its ranks' weights and facts; the job's stderr is kept in out/job.log."""
    out.mkdir()
    cmd = (
        launch_prefix(launcher, n)
        + [PROBE]
        + [
            str(out),
            "--config",
            str(ROOT / "configs/mlp.yaml"),
            f"log.dir={tmp_path}",
            "log.progress=never",
            *overrides,
        ]
    )
    result = run(cmd, cwd=tmp_path, timeout=600, env=env)
    (out / "job.log").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    weights = [np.load(p) for p in sorted(out.glob("weights-rank*.npz"))]
    infos = [read_json(p) for p in sorted(out.glob("probe-rank*.json"))]
    return [[w[k] for k in sorted(w.files, key=lambda f: int(f.split("_")[1]))] for w in weights], infos


def test_mirrored_splits_the_global_batch_and_equals_one_replica_with_double_batch(tmp_path):
    """2 logical CPU replicas x batch B == 1 replica x batch 2B after k SGD steps on the same samples."""
    common = [
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.optimizer=sgd",
        "train.lr=0.1",
        "train.max_steps=10",
        "checkpoint.interval=0",
        "train.threads=1",
    ]
    two, two_info = probe(
        tmp_path,
        tmp_path / "two",
        "single",
        1,
        *common,
        "train.batch_size=32",
        "dist.cpu_devices=2",
        "log.run_name=two",
    )
    one, one_info = probe(tmp_path, tmp_path / "one", "single", 1, *common, "train.batch_size=64", "log.run_name=one")
    assert two_info[0] == {"replica_batch_sizes": [32, 32], "replicas": 2}  # the global batch of 64 really split
    assert one_info[0] == {"replica_batch_sizes": [64], "replicas": 1}
    assert read_json(tmp_path / "two" / "summary.json")["backend"] == "reduce-to-one"  # MirroredStrategy on CPUs
    for a, b in zip(two[0], one[0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert read_json(tmp_path / "two" / "summary.json")["steps"] == 10


@needs_fashion
def test_multi_worker_trains_fashion_mnist_with_identical_weights(tmp_path):
    """Two workers train bit-identically; and a chief that stays 12 s after worker 1 has left (longer
    than the 10 s TensorFlow's coordination service waits for a silent task by default) is not told
    that worker 1 crashed."""
    weights, infos = probe(
        tmp_path,
        tmp_path / "out",
        "torchrun",
        2,
        "data.dataset=fashion-mnist",
        "train.epochs=1",
        "log.run_name=r",
        "train.threads=1",
        "dist.timeout=60",
        env={"TF_PROBE_CHIEF_STAYS_S": "12"},
    )
    assert [i["replicas"] for i in infos] == [2, 2]
    assert [i["heartbeat_timeout_ms"] for i in infos] == [60_000, 60_000]
    out = (tmp_path / "out" / "job.log").read_text()
    assert "CoordinationServiceError" not in out and "tasks have crashed" not in out, out[-3000:]
    assert "retracing" not in out, out[-3000:]  # one trace of the gather serves rows of every length
    assert len(weights) == 2
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)  # all-reduced updates keep the workers bit-identical
    summary, _ = check_run_dir(tmp_path / "r", "tf", 2, 0.80)
    assert summary["backend"] == "ring" and summary["steps"] == 235  # MultiWorkerMirroredStrategy on CPUs


@needs_fashion
def test_resume_after_epoch_one_of_two(tmp_path):
    common = ["data.dataset=fashion-mnist", "data.limit=6000", "train.threads=1"]
    full = tf_train(tmp_path, "torchrun", 2, *common, "train.epochs=2", "log.run_name=full")
    assert full.returncode == 0, full.stderr[-3000:]
    first = tf_train(tmp_path, "torchrun", 2, *common, "train.epochs=1", "log.run_name=r")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = tf_train(tmp_path, "torchrun", 2, *common, "train.epochs=2", "log.run_name=r", "checkpoint.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "(after epoch 1, step 24)" in resumed.stdout
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2" in resumed.stdout
    done, reference = read_json(tmp_path / "r" / "summary.json"), read_json(tmp_path / "full" / "summary.json")
    assert done["steps"] == reference["steps"] == 48 and done["epochs"] == 2
    assert done["final_eval_accuracy"] == pytest.approx(reference["final_eval_accuracy"], abs=2e-3)
    assert [s for s, _ in read_scalars(tmp_path / "r")["eval/accuracy"]] == [24, 48]


def test_fp16_on_cpu_and_horovod_are_clear_errors(tmp_path):
    out = tf_train(tmp_path, "single", 1, "data.dataset=synthetic", "train.precision=fp16")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "tf_dist.train: error: train.precision=fp16 needs a GPU (mixed_float16): use bf16 or fp32 on CPU"
    )
    out = tf_train(tmp_path, "single", 1, "data.dataset=synthetic", "dist.backend=horovod")
    assert out.returncode == 2 and "Horovod's TensorFlow part does not build" in out.stderr
    assert not any(tmp_path.glob("*/summary.json"))


def test_bf16_policy_trains(tmp_path):
    out = tf_train(
        tmp_path,
        "single",
        1,
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.epochs=1",
        "train.precision=bf16",
        "log.run_name=b",
        "train.threads=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = read_json(tmp_path / "b" / "summary.json")
    assert summary["precision"] == "bf16" and summary["final_eval_accuracy"] > 0.6


def test_tf_config_from_world():
    local = tf_config(World(rank=1, size=2, local_rank=1, local_size=2, master_port=29500))
    assert local == {
        "cluster": {"worker": ["127.0.0.1:29501", "127.0.0.1:29502"]},
        "task": {"type": "worker", "index": 1},
    }
    slurm = tf_config(
        World(
            rank=5,
            size=8,
            local_rank=1,
            local_size=4,
            node_rank=1,
            num_nodes=2,
            master_addr="gpu-01",
            master_port=21000,
            hosts=("gpu-01", "gpu-02"),
        )
    )
    assert slurm["cluster"]["worker"] == [f"gpu-0{1 + r // 4}:{21001 + r % 4}" for r in range(8)]
    assert slurm["task"] == {"type": "worker", "index": 5}


def test_tf_ports_stay_out_of_the_ephemeral_range():
    workers = tf_config(World(rank=0, size=2, local_size=2, master_port=41827))["cluster"]["worker"]
    assert workers == ["127.0.0.1:21828", "127.0.0.1:21829"]


def test_tf_config_needs_hosts_for_several_nodes():
    from launch.errors import WorldError

    with pytest.raises(WorldError, match="needs every worker's host"):
        tf_config(World(rank=0, size=4, local_size=2, num_nodes=2, master_addr="a"))


# A worker at the last barrier whose leader (the coordination service's host) has already left.
LEADER_GONE = """
import json, os, sys
rank = int(sys.argv[1])
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": rank}})
from launch.cluster.world import World
from tf_dist import distributed
class Gone:
    def wait_at_barrier(self, *args):
        raise distributed.tf.errors.UnavailableError(None, None, "Failed to send RPC to coordination service")
distributed.context.context = Gone
distributed.wait_for_every_worker(World(rank=rank, size=2), timeout=10)
"""


def test_a_worker_that_finds_the_leader_gone_after_the_last_barrier_exits_cleanly():
    """The leader leaves once the barrier is complete, sometimes before a worker's answer is out;
    the leader itself never hides that error."""
    follower, leader = (run([sys.executable, "-c", LEADER_GONE, rank], cwd=ROOT, timeout=120) for rank in "10")
    assert follower.returncode == 0, follower.stderr[-2000:]
    assert leader.returncode == 1 and "UnavailableError" in leader.stderr


def test_a_checkpoint_cut_short_is_damaged_and_a_full_disk_is_one_line(tmp_path, tiny_disk):
    """The TensorFlow side of what launch.run.resume passes over (a damaged file) and of the full-disk
    line: tf.train.Checkpoint's reader says only "Read less bytes than requested"."""
    from launch.errors import UserError
    from launch.outputs.checkpoints import DamagedCheckpoint
    from tf_dist.checkpoint import Checkpoints
    from tf_dist.models import build_model
    from tf_dist.quiet import keras

    model, optimizer = build_model("mlp"), keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    checkpoints = Checkpoints(model, optimizer, "mlp")
    checkpoints.save(tmp_path, 7, is_chief=True, progress={"step": 7})
    assert checkpoints.restore(tmp_path / "ckpt-7.index") == {"step": 7}
    data = next(tmp_path.glob("ckpt-7.data*"))
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(DamagedCheckpoint, match="ckpt-7: not readable"):
        checkpoints.restore(tmp_path / "ckpt-7.index")
    with pytest.raises(UserError, match=f"no space left on {tiny_disk} for ckpt-8 "):
        checkpoints.save(tiny_disk, 8, is_chief=True, progress={})
    assert list(tiny_disk.iterdir()) == []  # nothing partial left, TensorFlow's temp folder neither
