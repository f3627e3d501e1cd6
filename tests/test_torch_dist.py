"""torch_dist: real processes under torchrun and mpirun with gloo, 1 thread per worker."""

import contextlib
import shutil
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch

from helpers import ROOT, check_run_dir, read_json, read_scalars, run, train_cmd

pytestmark = pytest.mark.timeout(900)
HAVE_FASHION = Path("/usr/share/datasets/fashion-mnist").is_dir()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="Debian's dataset-fashion-mnist is not installed")
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI's mpirun is not installed")


def torch_train(tmp_path, launcher, n, *overrides, timeout=300):
    cmd = train_cmd("torch_dist.train", launcher, n, [f"log.dir={tmp_path}", "log.progress=never", *overrides])
    return run(cmd, cwd=tmp_path, timeout=timeout)


def params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_two_workers_average_gradients_like_one_worker_with_double_batch(tmp_path):
    """2 workers x batch B for k SGD steps == 1 worker x batch 2B on the same samples.

    Summed gradients would double the step, skipped ones would halve the data: both break this.
    """
    common = [
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.optimizer=sgd",
        "train.lr=0.1",
        "train.max_steps=12",
        "train.shuffle=true",
        "checkpoint.interval=0",
    ]
    two = torch_train(tmp_path, "torchrun", 2, *common, "train.batch_size=32", "log.run_name=two")
    assert two.returncode == 0, two.stderr[-3000:]
    one = torch_train(tmp_path, "single", 1, *common, "train.batch_size=64", "log.run_name=one")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = params(tmp_path / "two" / "model.pt"), params(tmp_path / "one" / "model.pt")
    torch.manual_seed(0)
    from torch_dist.models import build_model

    init = build_model("mlp").state_dict()
    for name in a:
        assert not torch.allclose(a[name], init[name]), f"{name} did not train"
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert (
        read_json(tmp_path / "two" / "summary.json")["steps"]
        == read_json(tmp_path / "one" / "summary.json")["steps"]
        == 12
    )


def test_a_named_backend_gives_one_process_the_ddp_path(tmp_path):
    """dist.backend=gloo in one process: a one-rank process group and DDP (how the GPU benchmark
    measures nccl on one GPU), training exactly as the plain single process does."""
    common = [
        "data.dataset=synthetic",
        "data.limit=2000",
        "train.optimizer=sgd",
        "train.lr=0.1",
        "train.max_steps=8",
        "checkpoint.interval=0",
    ]
    for name, backend in (("plain", "auto"), ("ddp", "gloo")):
        out = torch_train(tmp_path, "single", 1, *common, f"dist.backend={backend}", f"log.run_name={name}")
        assert out.returncode == 0, out.stderr[-3000:]
    assert read_json(tmp_path / "plain" / "summary.json")["backend"] == "none"
    assert read_json(tmp_path / "ddp" / "summary.json")["backend"] == "gloo"
    a, b = params(tmp_path / "plain" / "model.pt"), params(tmp_path / "ddp" / "model.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@needs_fashion
@pytest.mark.parametrize("launcher", ["torchrun", pytest.param("mpirun", marks=needs_mpirun)])
def test_two_workers_train_fashion_mnist(tmp_path, launcher):
    out = torch_train(tmp_path, launcher, 2, "data.dataset=fashion-mnist", "train.epochs=1", "log.run_name=r")
    assert out.returncode == 0, out.stderr[-3000:]
    summary, scalars = check_run_dir(tmp_path / "r", "torch", 2, 0.80)
    assert summary["steps"] == 235 and summary["dropped_per_epoch"] == 0  # 60000 / 2 / 128, rounded up
    assert [s for s, _ in scalars["eval/accuracy"]] == [235]


@needs_fashion
def test_resume_after_epoch_one_of_two(tmp_path):
    common = ["data.dataset=fashion-mnist", "data.limit=6000", "log.run_name=r"]
    full = torch_train(tmp_path, "torchrun", 2, *common[:2], "train.epochs=2", "log.run_name=full")
    assert full.returncode == 0, full.stderr[-3000:]
    first = torch_train(tmp_path, "torchrun", 2, *common, "train.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "r" / "checkpoints" / "step-00000024.pt").is_file()
    again = torch_train(tmp_path, "torchrun", 2, *common, "train.epochs=2")
    assert again.returncode != 0 and "already holds a finished run" in again.stderr
    resumed = torch_train(tmp_path, "torchrun", 2, *common, "train.epochs=2", "checkpoint.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "(after epoch 1, step 24)" in resumed.stdout
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2" in resumed.stdout  # epoch 1 is not repeated
    done, reference = read_json(tmp_path / "r" / "summary.json"), read_json(tmp_path / "full" / "summary.json")
    assert done["steps"] == reference["steps"] == 48 and done["epochs"] == 2
    assert done["final_eval_accuracy"] == pytest.approx(reference["final_eval_accuracy"], abs=1e-6)
    eval_steps = [s for s, _ in read_scalars(tmp_path / "r")["eval/accuracy"]]
    assert eval_steps == [24, 48]


def test_bf16_on_cpu_trains(tmp_path):
    out = torch_train(
        tmp_path,
        "single",
        1,
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.epochs=1",
        "train.precision=bf16",
        "model.name=cnn",
        "log.run_name=b",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = read_json(tmp_path / "b" / "summary.json")
    assert summary["precision"] == "bf16" and summary["final_eval_accuracy"] > 0.6  # chance is 0.1


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    out = torch_train(tmp_path, "single", 1, "data.dataset=synthetic", "train.precision=fp16")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "torch_dist.train: error: train.precision=fp16 needs a GPU (it relies on GradScaler): use bf16 or fp32 on CPU"
    )
    assert not list(tmp_path.iterdir())  # nothing written


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    import pickle

    from launch.errors import UserError
    from torch_dist.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "step-00000001.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="not a loadable torch_dist checkpoint"):
        load_checkpoint(path, "mlp")
    assert not marker.exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from launch.errors import UserError
    from torch_dist.checkpoint import load_checkpoint, save_checkpoint
    from torch_dist.models import build_model

    model = build_model("cnn")
    save_checkpoint(
        tmp_path / "step-00000010.pt",
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        model_name="cnn",
        progress={"step": 10},
    )
    with pytest.raises(UserError, match="holds model 'cnn', not 'mlp'"):
        load_checkpoint(tmp_path / "step-00000010.pt", "mlp")
    assert load_checkpoint(tmp_path / "step-00000010.pt", "cnn")["progress"]["step"] == 10


def test_a_checkpoint_cut_short_is_damaged_and_one_of_another_model_is_not(tmp_path):
    """A damaged file is one a resume passes over for the one before (launch.run.resume); a whole
    checkpoint of another model is refused, never passed over."""
    from launch.outputs.checkpoints import DamagedCheckpoint
    from torch_dist.checkpoint import load_checkpoint, save_checkpoint
    from torch_dist.models import build_model

    model, path = build_model("mlp"), tmp_path / "step-00000010.pt"
    save_checkpoint(
        path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), model_name="mlp", progress={}
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedCheckpoint, match="not a loadable torch_dist checkpoint"):
        load_checkpoint(path, "mlp")


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_folder(tmp_path, tiny_disk):
    out = torch_train(
        tmp_path, "single", 1, "data.dataset=synthetic", "data.limit=2000", "train.epochs=1",
        "checkpoint.interval=1", f"checkpoint.dir={tiny_disk}", "log.run_name=r",
    )  # fmt: skip
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-3000:]
    assert f"no space left on {tiny_disk} for step-" in errors[0] and "bytes free" in errors[0]
    assert list(tiny_disk.iterdir()) == []  # no part of a checkpoint left behind


def test_models_match_keras_shapes():
    from torch_dist.models import build_model

    counts = {name: sum(p.numel() for p in build_model(name).parameters()) for name in ("mlp", "cnn")}
    assert counts == {"mlp": 784 * 128 + 128 + 128 * 10 + 10, "cnn": 320 + 18496 + 16010}
    assert (ROOT / "configs" / "cnn.yaml").is_file()


HEARTBEATS_THEN_EXIT = """
import sys
import warnings
from datetime import timedelta
import torch.distributed as dist
from launch.cluster.world import World
from torch_dist.heartbeats import Heartbeats
store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
Heartbeats.PERIOD = 0.0  # beat without pause: the thread is almost always inside a store call
beats = Heartbeats(World(master_port=store.port))
while int(store.get("mnist-dist/beat/0")) < 100:
    pass
if sys.argv[1] == "close":
    beats.close()
"""


@pytest.mark.parametrize("ending", ["close", "leave"])
def test_a_rank_s_heartbeat_thread_is_stopped_before_it_exits(tmp_path, ending):
    """The rank's exit code survives its exit only when the heartbeat thread was stopped first: a
    daemon thread caught inside a store call at interpreter exit aborts the process (seen once in
    50 short two-worker runs). `leave` shows that this setup provokes the abort, so the `close`
    case is what prevents it."""
    outs = [run([sys.executable, "-c", HEARTBEATS_THEN_EXIT, ending], cwd=ROOT, timeout=60) for _ in range(3)]
    codes = [out.returncode for out in outs]
    if ending == "close":
        assert codes == [0, 0, 0], outs[-1].stderr[-2000:]
    else:
        aborted = [out for out in outs if out.returncode == -signal.SIGABRT]
        assert aborted, codes
        assert "terminate called" in aborted[0].stderr


# A checkpoint as a GPU node writes it: torch.serialization's hook for device locations tags every
# storage cuda:0. In a process of its own, so that the hook goes with it.
GPU_NODE_CHECKPOINT = """
import sys, torch
from pathlib import Path
from torch_dist.checkpoint import save_checkpoint
from torch_dist.models import build_model
torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
model = build_model("mlp")
optimizer = torch.optim.Adam(model.parameters())
model(torch.zeros(2, 28, 28)).sum().backward()
optimizer.step()
save_checkpoint(Path(sys.argv[1]), model=model, optimizer=optimizer, model_name="mlp", progress={"step": 1})
"""


def test_a_gpu_node_s_checkpoint_resumes_anywhere_with_adam_s_step_on_the_cpu(tmp_path):
    """Read where no GPU is (a login node, a CPU run), the checkpoint loads; resumed onto parameters
    on another device (meta here, a GPU on a cluster), Adam's moments go there and its step stays on
    the CPU, where reading it costs no host sync."""
    from torch_dist.checkpoint import load_checkpoint
    from torch_dist.models import build_model

    path = tmp_path / "step-00000001.pt"
    out = run([sys.executable, "-c", GPU_NODE_CHECKPOINT, str(path)], cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)  # as written: every tensor on cuda:0
    state = load_checkpoint(path, "mlp")
    model = build_model("mlp").to("meta")
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.load_state_dict(state["optimizer"])
    moments = list(optimizer.state.values())
    assert len(moments) == 4 and all(m["step"].device.type == "cpu" for m in moments)
    assert all(m["exp_avg"].device.type == "meta" for m in moments)


class HorovodOptimizerRecording(torch.optim.SGD):
    """What Horovod's DistributedOptimizer adds to an optimizer, recorded: synchronize() waits for the
    all-reduces; step() waits for them too, unless inside skip_synchronize()."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.calls, self.skipping = [], False

    def synchronize(self):
        self.calls.append("synchronize")

    @contextlib.contextmanager
    def skip_synchronize(self):
        self.skipping = True
        yield
        self.skipping = False

    def step(self, closure=None):
        grad = self.param_groups[0]["params"][0].grad.item()
        self.calls.append(("step", "skipping" if self.skipping else "synchronizing", grad))
        return super().step(closure)


def test_horovod_fp16_unscales_the_averaged_gradients_once_then_steps_without_reducing_again():
    from torch_dist.horovod_comm import Horovod

    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = HorovodOptimizerRecording([weight])
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(weight.sum() * 3).backward()  # gradient 3, as scaled: 3072
    Horovod.finish_reduction(optimizer)  # the engine times it as the collective
    Horovod.step(optimizer, scaler)
    assert optimizer.calls == ["synchronize", ("step", "skipping", 3.0)]
    weight.grad = None
    optimizer.calls = []
    (weight.sum() * 2).backward()  # fp32: the same order, nothing to unscale
    Horovod.finish_reduction(optimizer)
    Horovod.step(optimizer, None)
    assert optimizer.calls == ["synchronize", ("step", "skipping", 2.0)]


def test_the_fp16_loss_scale_is_checkpointed(tmp_path):
    from torch_dist.checkpoint import load_checkpoint, save_checkpoint
    from torch_dist.models import build_model

    model = build_model("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)  # doubles after each good step
    scaler.scale(model(torch.zeros(2, 28, 28)).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    path = tmp_path / "step-00000001.pt"
    save_checkpoint(path, model=model, optimizer=optimizer, model_name="mlp", progress={}, scaler=scaler)
    resumed = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    resumed.load_state_dict(load_checkpoint(path, "mlp")["scaler"])
    assert resumed.get_scale() == scaler.get_scale() == 2048.0


def test_fp16_gets_a_loss_scaler_on_every_torch_setup_py_allows():
    """torch.amp.GradScaler is new in torch 2.3; `make test-compat` runs this on the oldest allowed."""
    from torch_dist.train import grad_scaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CUDA here: the scaler says it disables itself
        assert callable(grad_scaler().scale)


def test_a_restarted_attempt_reads_none_of_the_dead_attempt_s_keys(monkeypatch):
    """torchrun's static rendezvous keeps one store across restarts, where the restarted ranks would
    read the dead ones' addresses (pytorch#135712): each attempt's keys are apart."""
    import dataclasses
    from datetime import timedelta

    import torch.distributed as dist

    from launch.cluster.world import World
    from torch_dist.ddp import _attempt_store

    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    world = World(size=2, master_addr="127.0.0.1", master_port=agent.port, source="torchrun")
    dead = _attempt_store(world, timedelta(seconds=10))
    dead.set("rank1-address", "the dead rank's")
    restarted = _attempt_store(dataclasses.replace(world, restarts=1), timedelta(seconds=10))
    assert dead.check(["rank1-address"]) and not restarted.check(["rank1-address"])
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")
    assert _attempt_store(world, timedelta(seconds=10)) is None  # no agent: rank 0 makes the store
