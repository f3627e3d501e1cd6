"""Communication options, each checked so that the test fails if the option did nothing or broke
training: gradient accumulation (both frameworks), DDP's compression hooks (fp16, bf16, PowerSGD with
error feedback), TensorFlow's gradient packing, and the clear refusals where a framework lacks one."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_tf_dist import probe

from launch.cluster.world import World
from launch.config import load_config

from helpers import ROOT, read_json, run, train_cmd

pytestmark = pytest.mark.timeout(900)
MLP = str(ROOT / "configs/mlp.yaml")
SGD = ["train.optimizer=sgd", "train.lr=0.1", "train.threads=1", "log.progress=never"]


def torch_run(tmp_path: Path, name: str, *overrides: str, workers: int = 2):
    out = run(
        train_cmd(
            "torch_dist.train", "torchrun", workers, [f"log.dir={tmp_path}", f"log.run_name={name}", *SGD, *overrides]
        ),
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return read_json(tmp_path / name / "summary.json"), torch.load(tmp_path / name / "model.pt", weights_only=True)


# --- gradient accumulation ---------------------------------------------------------------------

ONE_EPOCH = ["data.dataset=synthetic", "data.limit=1000", "train.epochs=1"]


def test_torch_accumulation_equals_one_batch_of_k_times_the_size(tmp_path):
    """2 workers x 2 micro-batches of 32 == 2 workers x one batch of 64: the same steps and weights."""
    accumulated, a = torch_run(tmp_path, "acc", *ONE_EPOCH, "train.batch_size=32", "train.accumulate_steps=2")
    big, b = torch_run(tmp_path, "big", *ONE_EPOCH, "train.batch_size=64")
    assert accumulated["steps"] == big["steps"] == 8 and accumulated["global_batch_size"] == 128
    assert accumulated["accumulate_steps"] == 2
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_tf_accumulation_equals_one_batch_of_k_times_the_size(tmp_path):
    a, infos = probe(
        tmp_path,
        tmp_path / "acc",
        "torchrun",
        2,
        *SGD,
        *ONE_EPOCH,
        "train.batch_size=32",
        "train.accumulate_steps=2",
        "log.run_name=acc",
    )
    b, _ = probe(tmp_path, tmp_path / "big", "torchrun", 2, *SGD, *ONE_EPOCH, "train.batch_size=64", "log.run_name=big")
    assert read_json(tmp_path / "acc" / "summary.json")["steps"] == 8 and infos[0]["replica_batch_sizes"] == [52]
    for x, y in zip(a[0], b[0]):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture
def engine_factory(tmp_path):
    """TorchEngines in this process, in a one-rank gloo group (DDP and its hooks run as with more)."""
    from torch_dist import distributed
    from torch_dist.train import TorchEngine

    comms = []

    def make(*overrides: str):
        config = load_config(
            MLP,
            [
                "data.dataset=synthetic",
                "data.limit=512",
                "train.batch_size=32",
                "dist.backend=gloo",
                f"log.dir={tmp_path}",
                *SGD,
                *overrides,
            ],
        )
        comm, device = distributed.connect(config.dist, World(), gpus=0)
        comms.append(comm)
        return TorchEngine(config, World(), comm, device), comm

    yield make
    for comm in comms:
        comm.shutdown()


def test_accumulation_all_reduces_only_the_last_micro_batch(engine_factory):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    calls = []

    def counting_allreduce(state, bucket):
        calls.append(bucket.index())
        return default_hooks.allreduce_hook(None, bucket)

    for accumulate in (1, 4):
        engine, comm = engine_factory(f"train.accumulate_steps={accumulate}")
        engine.ddp.register_comm_hook(state=None, hook=counting_allreduce)
        engine.start_epoch(np.arange(512))
        calls.clear()
        engine.train_step(0)
        per_step = len(calls)
        del engine  # DDP's reducer goes before its process group
        comm.shutdown()
        if accumulate == 1:
            plain = per_step
        assert per_step == plain >= 1  # 4 micro-batches, but one all-reduce of every bucket (no_sync)


# --- compression -------------------------------------------------------------------------------

FASHION = ["data.dataset=fashion-mnist", "data.limit=12000", "train.epochs=1"]


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist")
def test_compressed_all_reduce_trains_like_the_plain_one(tmp_path):
    """fp16 rounds the gradients on the wire, PowerSGD (rank 1 from step 3) sends a low-rank
    approximation: both must change the weights (else the hook did nothing) and still train."""
    plain, w = torch_run(tmp_path, "plain", *FASHION)
    fp16, w16 = torch_run(tmp_path, "fp16", *FASHION, "dist.compression=fp16")
    power, wp = torch_run(
        tmp_path, "powersgd", *FASHION, "dist.compression=powersgd", "dist.powersgd_rank=1", "dist.powersgd_start=3"
    )
    assert (fp16["compression"], power["compression"]) == ("fp16", "powersgd")
    diff16 = max(float((w16[k] - w[k]).abs().max()) for k in w)
    diff_power = max(float((wp[k] - w[k]).abs().max()) for k in w)
    assert 0 < diff16 < 1e-2 < diff_power  # fp16 barely moves the weights, a rank-1 gradient does
    assert abs(fp16["final_eval_accuracy"] - plain["final_eval_accuracy"]) < 0.01
    assert power["final_eval_accuracy"] > plain["final_eval_accuracy"] - 0.05  # rank 1: a little lower, still learning


def test_powersgd_keeps_error_feedback(engine_factory):
    engine, comm = engine_factory("dist.compression=powersgd", "dist.powersgd_rank=1", "dist.powersgd_start=2")
    engine.start_epoch(np.arange(512))
    for i in range(4):
        engine.train_step(i)
    state = comm.hook_state
    assert state.use_error_feedback and state.iter > state.start_powerSGD_iter
    assert state.error_dict and any(float(e.abs().sum()) > 0 for e in state.error_dict.values())  # what was not sent


def test_bf16_compression_runs_where_torch_allows_it_else_says_why(engine_factory):
    from launch.errors import ConfigError

    if torch.version.cuda is None:  # DDP's bf16 hook needs a CUDA (NCCL 2.10+) or XPU build
        with pytest.raises(ConfigError, match="dist.compression=bf16: BF16 all reduce .* use fp16"):
            engine_factory("dist.compression=bf16")
    else:
        engine, _ = engine_factory("dist.compression=bf16")
        engine.start_epoch(np.arange(512))
        engine.train_step(0)


def test_compression_needs_several_workers_or_a_named_backend(tmp_path):
    out = run(
        train_cmd(
            "torch_dist.train",
            "single",
            1,
            [f"log.dir={tmp_path}", "dist.compression=fp16", "data.dataset=synthetic", "data.limit=256"],
        ),
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "one worker has none" in out.stderr.strip().splitlines()[-1]


# --- TensorFlow --------------------------------------------------------------------------------


def test_tf_packs_gradients_by_bucket_mb_and_refuses_compression(tmp_path):
    _, infos = probe(
        tmp_path,
        tmp_path / "p",
        "torchrun",
        2,
        *SGD,
        "data.dataset=synthetic",
        "data.limit=512",
        "train.epochs=1",
        "dist.bucket_mb=0.5",
        "log.run_name=p",
    )
    assert infos[0]["bytes_per_pack"] == 512 * 1024
    assert (infos[0]["implementation"], infos[0]["timeout_seconds"]) == ("RING", None)  # no thread per collective
    out = run(
        train_cmd(
            "tf_dist.train",
            "single",
            1,
            [f"log.dir={tmp_path}", "dist.compression=fp16", "data.dataset=synthetic", "data.limit=256"],
        ),
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "tf.distribute has no gradient compression" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "backend,gpus,implementation",
    [("auto", 8, "NCCL"), ("nccl", 8, "NCCL"), ("gloo", 8, "RING"), ("auto", 0, "RING"), ("gloo", 0, "RING")],
)
def test_tf_workers_all_reduce_over_nccl_between_gpus_without_a_thread_per_collective(backend, gpus, implementation):
    """TensorFlow picks NCCL only when asked; a per-collective timeout starts a thread per collective."""
    from tf_dist.distributed import communication_options

    options = communication_options(backend, gpus, bucket_mb=25)
    assert (options.implementation.name, options.timeout_seconds) == (implementation, None)
    assert options.bytes_per_pack == 25 * 2**20
