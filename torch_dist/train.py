"""PyTorch data-parallel MNIST training: `python -m torch_dist.train --config configs/mlp.yaml [key=value ...]`.

The same command runs as one process, under `torchrun --nproc_per_node=N`, `mpirun -np N` or
`srun`: the rank comes from launch.cluster.world. The loop (epochs, timing, logging, checkpoints, summary)
is launch.run.loop's; this module supplies the PyTorch parts: tensors, DDP steps, collectives, files.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from launch.cluster.cpus import threads_per_worker
from launch.cluster.devices import require_usable_gpus
from launch.cluster.world import World
from launch.frameworks import FRAMEWORKS, Placement, check
from launch.run import loop, worker
from launch.run.engine import EVAL_BATCH, Engine, load_data
from torch_dist import distributed
from torch_dist.checkpoint import checkpoint_path, load_checkpoint, on_cpu, restore_rng, save_checkpoint
from torch_dist.models import build_model
from torch_dist.timing import StepClock

PROG = "torch_dist.train"
# torch.optim imports torch._dynamo, which makes its compile cache's folder in the temp dir at once
# (nothing is compiled here): removed as the rank leaves when this process made it and left it empty.
_INDUCTOR = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
_INDUCTOR_WAS_THERE = _INDUCTOR.exists() or "TORCHINDUCTOR_CACHE_DIR" in os.environ


def _remove_inductor_folder() -> None:
    if not _INDUCTOR_WAS_THERE:
        with contextlib.suppress(OSError):  # not empty, or gone: left as it is
            _INDUCTOR.rmdir()


worker.before_leaving(_remove_inductor_folder)


def main(argv: list[str] | None = None) -> None:
    worker.main(PROG, train, argv)


def train(config, world: World) -> int:
    """Train on this rank; the exit code: 0, or loop.PREEMPTED after a requested stop."""
    store = None
    if config.dist.backend != "horovod":  # Horovod counts its own local ranks
        world, store = distributed.find_hosts(world, config.dist.timeout)
    torch.set_num_threads(threads_per_worker(config, world))
    set_tf32(config.train.tf32)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    require_usable_gpus(gpus, FRAMEWORKS["torch"].cuda_build)
    check(config, "torch", Placement(workers=world.size, gpus_per_node=gpus))
    comm, device = distributed.connect(config.dist, world, gpus, store)
    with contextlib.closing(comm):
        code = _train_connected(config, world, comm, device)
        comm.shutdown()
    return code


def _train_connected(config, world: World, comm, device: torch.device) -> int:
    """The loop on a connected rank; DDP's reducer is gone when this returns, as it must be before
    the process group is destroyed."""
    engine = TorchEngine(config, world, comm, device)
    try:
        return loop.train(config, world, engine)
    except RuntimeError as exc:  # a collective failed: say which ranks are gone, where gloo can tell
        raise comm.missing_ranks(exc) from None


class TorchEngine(Engine):
    framework = "torch"

    def __init__(self, config, world: World, comm, device: torch.device):
        self.config, self.world, self.comm, self.backend = config, world, comm, comm.name
        self.torch_device, self.device = device, device.type
        self.versions = {"torch": torch.__version__, **_gpu_versions(device)}
        data = load_data(config)
        self.n_train, self.data_info = len(data.train_images), data.info()
        self.train_images, self.train_labels = data.train_images, data.train_labels.astype(np.int64)
        if device.type == "cuda":  # the whole training set (47 MB of uint8) lives on the GPU
            self.train_x = torch.tensor(self.train_images, device=device)
            self.train_y = torch.tensor(self.train_labels, device=device)
        self.test_x = torch.tensor(data.test_images, device=device)
        self.test_y = torch.tensor(data.test_labels, device=device, dtype=torch.long)

        torch.manual_seed(config.train.seed)  # the same initial weights on every rank, before DDP's broadcast
        self.model = build_model(config.model.name).to(device)
        lr = config.scaled_lr(world.size)
        if config.train.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=config.train.momentum)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        # Rank 0's parameters reach every rank here; gradients are averaged in every step.
        self.accumulate = config.train.accumulate_steps
        self.ddp, self.optimizer = comm.wrap(self.model, self.optimizer, device, self.accumulate)
        self.autocast = _autocast(config.train.precision, device)
        self.scaler = grad_scaler() if config.train.precision == "fp16" else None
        self.batch_per_rank = config.train.batch_size * self.accumulate  # one optimizer step's images
        self.outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.clock = StepClock(self.model, device)

    def start_epoch(self, indices: np.ndarray) -> None:  # train_step slices by batch number
        if self.device == "cpu":
            # numpy's fancy indexing gathers a shard several times faster than torch's on the CPU
            self.xs, self.ys = (
                torch.from_numpy(self.train_images[indices]),
                torch.from_numpy(self.train_labels[indices]),
            )
        else:
            index = torch.from_numpy(indices).to(self.torch_device)
            self.xs, self.ys = self.train_x[index], self.train_y[index]
        self.ddp.train()

    def train_step(self, batch: int) -> int:
        step = slice(batch * self.batch_per_rank, (batch + 1) * self.batch_per_rank)
        xs, ys = self.xs[step], self.ys[step]
        self.clock.mark("start")
        self.optimizer.zero_grad()  # sets grads to None by default (torch >= 2.0; Horovod takes no argument)
        # accumulate_steps micro-batches (always that many, so Horovod's count holds; the short last
        # step of an epoch splits evenly); only the last one's backward all-reduces.
        micro = list(zip(xs.tensor_split(self.accumulate), ys.tensor_split(self.accumulate)))
        for i, (x, y) in enumerate(micro):
            with contextlib.nullcontext() if i == len(micro) - 1 else self.comm.no_sync(self.ddp):
                with self.autocast:
                    logits = self.ddp(x.float().div_(255))  # uint8 -> [0, 1] on the device
                    loss_sum = F.cross_entropy(logits, y, reduction="sum")
                # Each micro-batch's share of the mean over the step's images: one big batch's gradient.
                loss = loss_sum / len(ys)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            # Kept on the device and reduced once per interval: no host sync and no extra kernels per step.
            self.outputs.append((loss_sum.detach(), logits.detach(), y))
        self.comm.finish_reduction(self.optimizer)
        self.clock.mark("reduced")
        self.comm.step(self.optimizer, self.scaler)
        self.clock.end_step()
        return len(ys)

    def take_timings(self) -> tuple[float, float]:
        return self.clock.take()

    def take_outputs(self) -> tuple[float, float]:
        loss_sums, logits, labels = zip(*self.outputs)
        self.outputs = []
        loss_sum = torch.stack(loss_sums).float().sum().item()
        correct = (torch.cat(logits).argmax(1) == torch.cat(labels)).sum().item()
        return loss_sum, correct

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def evaluate(self, rank: int, size: int) -> tuple[float, float, int]:
        self.model.eval()
        x_all, y_all = self.test_x[rank::size], self.test_y[rank::size]
        totals = torch.zeros(3, dtype=torch.float64, device=self.torch_device)
        for start in range(0, len(x_all), EVAL_BATCH):
            x = x_all[start : start + EVAL_BATCH].float().div_(255)
            y = y_all[start : start + EVAL_BATCH]
            with self.autocast:
                logits = self.model(x)
            totals[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
        loss_sum, correct, count = totals.tolist()
        return loss_sum, correct, int(count)

    def save_checkpoint(self, folder: Path, step: int, progress: dict) -> None:
        if self.world.is_chief:
            save_checkpoint(
                checkpoint_path(folder, step),
                model=self.model,
                optimizer=self.optimizer,
                model_name=self.config.model.name,
                progress=progress,
                scaler=self.scaler,
            )

    def restore_checkpoint(self, path: Path, lr: float) -> dict:
        """Every rank reads the chief's checkpoint (the run directory is on a shared filesystem)."""
        state = load_checkpoint(path, self.config.model.name)
        self.model.load_state_dict(state["model"])  # in place: DDP keeps its references
        self.optimizer.load_state_dict(state["optimizer"])  # with the lr it had, maybe for another world size
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])  # the loss scale it had reached, not a fresh 65536
        restore_rng(state)
        self.comm.after_restore(self.model, self.optimizer)
        return state.get("progress", {})

    def save_model(self, run_dir: Path) -> Path:
        path = run_dir / FRAMEWORKS["torch"].model_file
        torch.save(on_cpu(self.model.state_dict()), path)  # loadable where there is no GPU
        return path


def set_tf32(enabled: bool) -> None:
    """train.tf32, for matmuls and convolutions alike (torch's defaults: off and on)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def _gpu_versions(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    nccl = ".".join(map(str, torch.cuda.nccl.version()))
    return {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda, "nccl": nccl}


def grad_scaler():
    """fp16's loss scaler, on the GPU: torch.amp's, torch.cuda.amp's before torch 2.3."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


if __name__ == "__main__":
    main()
