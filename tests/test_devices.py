"""Which GPU a rank trains on, and so which backend `auto` is, under every way launchers bind GPUs;
what a run does with GPUs it cannot use; TF32."""

import dataclasses
import inspect
import os
import re
import sys

import pytest

from launch.cluster.devices import backend_on, gpu_for_rank, unused_gpus
from launch.cluster.world import World
from launch.errors import ConfigError

from helpers import run

BINDINGS = {
    # style: (GPUs this rank sees, its local rank, ranks on its node), variables the launcher set -> its GPU
    "torchrun or mpirun, every rank sees the node's 8": ((8, 5, 8), {}, 5),
    "srun --gpus-per-task=1 or --gpu-bind: one each": ((1, 5, 8), {"CUDA_VISIBLE_DEVICES": "5"}, 0),
    "a Kubernetes pod with one GPU and one rank": ((1, 0, 1), {}, 0),
    "one process on a node of 4 (MirroredStrategy)": ((4, 0, 1), {}, 0),
    "fewer ranks than GPUs": ((8, 3, 4), {}, 3),
    "a node without GPUs": ((0, 3, 4), {}, None),
}


def _launcher_set(bound: dict, monkeypatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in bound.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("seen,bound,gpu", BINDINGS.values(), ids=BINDINGS.keys())
def test_each_binding_style_gives_the_rank_its_own_gpu(seen, bound, gpu, monkeypatch):
    _launcher_set(bound, monkeypatch)
    assert gpu_for_rank(*seen) == gpu


SHARED = {
    # (GPUs this rank sees, its local rank, ranks on its node), variables set -> the refusal
    "four ranks, two GPUs each seen": ((2, 3, 4), {"CUDA_VISIBLE_DEVICES": "0,1"}, "sees 2 GPU(s) while 4 ranks"),
    # seen on an H200 machine: NCCL's "invalid usage" after 12 s, told as a join timeout
    "torchrun --nproc 2 on a one-GPU machine": ((1, 1, 2), {}, "sees 1 GPU(s) while 2 ranks share its node"),
    "a container given one GPU, two ranks in it": ((1, 0, 2), {"NVIDIA_VISIBLE_DEVICES": "0"}, "start at most 1"),
}


@pytest.mark.parametrize("seen,bound,refusal", SHARED.values(), ids=SHARED.keys())
def test_ranks_that_would_share_gpus_are_refused_with_the_fix(seen, bound, refusal, monkeypatch):
    _launcher_set(bound, monkeypatch)
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        gpu_for_rank(*seen)


def test_auto_is_nccl_on_a_gpu_and_gloo_on_the_cpu():
    assert [backend_on("auto", 0), backend_on("auto", None)] == ["nccl", "gloo"]
    assert [backend_on("gloo", 0), backend_on("nccl", 3)] == ["gloo", "nccl"]
    with pytest.raises(ConfigError, match="dist.backend=nccl needs a GPU for every rank"):
        backend_on("nccl", None)


CONTRACT = {
    # (GPUs the driver lists, GPUs the framework can use, CUDA_VISIBLE_DEVICES) -> GPUs left unused
    "a CPU-only build on a GPU node": ((8, 0, None), True),
    "the same, with the rank's GPU bound by the launcher": ((8, 0, "3"), True),
    "GPUs hidden on purpose": ((8, 0, ""), False),
    "GPUs hidden with -1": ((8, 0, "-1"), False),
    "a CUDA build that sees them": ((8, 8, None), False),
    "a node without GPUs": ((0, 0, None), False),
}


@pytest.mark.parametrize("seen,unused", CONTRACT.values(), ids=CONTRACT.keys())
def test_a_run_never_leaves_the_gpus_it_is_allowed_for_the_cpu_unasked(seen, unused):
    assert unused_gpus(*seen) is unused


TF32_PROBE = """
import sys, torch, tensorflow as tf
from torch_dist.train import set_tf32 as torch_tf32
from tf_dist.train import set_tf32 as tf_tf32
for enabled in (True, False):
    torch_tf32(enabled), tf_tf32(enabled)
    on = tf.config.experimental.tensor_float_32_execution_enabled()
    print(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, on)
"""


def test_train_tf32_sets_matmuls_and_convolutions_alike_in_both_frameworks(tmp_path):
    """Their defaults differ (TensorFlow: on; torch: matmuls off, convolutions on)."""
    out = run([sys.executable, "-c", TF32_PROBE], cwd=tmp_path, timeout=120)
    assert out.stdout.split("\n")[:2] == ["True True True", "False False False"], out.stderr[-2000:]


def test_nccl_errors_raise_in_the_rank_unless_the_user_chose(monkeypatch):
    """A failed NCCL collective reaches the loop's "lost rank" line instead of the watchdog's abort;
    a value the user exported stays (only a GPU run shows the line itself)."""
    from torch_dist.ddp import nccl_errors_raise

    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "")  # so that the end of the test undoes what it sets
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING")
    nccl_errors_raise()
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "2"
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    nccl_errors_raise()
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_a_gpu_rank_binds_its_device_when_the_group_is_made():
    """init_process_group(device_id=) on a GPU (torch 2.3+, so that NCCL connects under the rendezvous
    deadline); never on the CPU, and torchrun's store is reused through env://."""
    import torch
    import torch.distributed as dist

    from launch.cluster.world import World
    from torch_dist.ddp import _group_options

    world = World(rank=1, size=2, local_rank=1, local_size=2, master_addr="node1", master_port=29400, source="torchrun")
    gpu = torch.device("cuda", 1)
    binds = "device_id" in inspect.signature(dist.init_process_group).parameters  # False on torch 2.1
    assert _group_options(world, gpu, None) == {"init_method": "env://", **({"device_id": gpu} if binds else {})}
    assert _group_options(world, torch.device("cpu"), None) == {"init_method": "env://"}
    mpirun = dataclasses.replace(world, source="openmpi")
    assert _group_options(mpirun, torch.device("cpu"), None) == {"init_method": "tcp://node1:29400"}


def test_nccls_invalid_usage_with_fewer_gpus_than_ranks_is_named_as_a_shared_gpu(monkeypatch):
    """Seen on an H200 with CUDA_VISIBLE_DEVICES set alike for both ranks of torchrun --nproc 2."""
    import torch

    from torch_dist.ddp import _shared_gpu

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    world = World(rank=1, size=2, local_rank=1, local_size=2)
    invalid = RuntimeError("NCCL error in: NCCLUtils.cpp:93, invalid usage (run with NCCL_DEBUG=WARN for details)")
    said = str(_shared_gpu(invalid, world))
    assert said.startswith("NCCL refused to start: 2 ranks share this node and each sees 1 GPU(s)"), said
    assert "(CUDA_VISIBLE_DEVICES=0), so two of them are on one GPU; start at most 1 rank(s) per node" in said
    other = RuntimeError("NCCL error: unhandled system error")
    assert _shared_gpu(other, world) is other
    assert _shared_gpu(invalid, World(size=2, local_size=1)) is invalid  # one rank here: not this
