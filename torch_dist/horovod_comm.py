"""Horovod as torch_dist's communicator: its DistributedOptimizer all-reduces in backward hooks; the
loop's collectives are Horovod's allgather. Started by horovodrun or mpirun (dist.backend=horovod)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from launch.cluster.world import World
from launch.errors import ConfigError
from launch.run.comm import GatheringBarrier
from torch_dist.ddp import optimizer_step


class Horovod(GatheringBarrier):
    """Horovod's allreduce through its DistributedOptimizer; started by horovodrun or mpirun."""

    name = "horovod"
    device = torch.device("cpu")

    def __init__(self, world: World, compression: str = "none"):
        self.compression = compression  # none or fp16 (launch.frameworks)
        try:
            import horovod.torch as hvd
        except ImportError:
            raise ConfigError(
                "dist.backend=horovod: Horovod is not installed; build and install it for this "
                "torch with `python -m torch_dist.horovod_build` (a few minutes, once)"
            ) from None
        self.hvd = hvd
        hvd.init()
        if (hvd.rank(), hvd.size()) != (world.rank, world.size):
            raise ConfigError(
                f"Horovod says rank {hvd.rank()} of {hvd.size()} but the launcher's environment "
                f"says {world.rank} of {world.size}: start with horovodrun or mpirun"
            )

    def wrap(self, model: torch.nn.Module, optimizer, device: torch.device, accumulate_steps: int = 1):
        """Horovod all-reduces in backward hooks; with accumulation, after every accumulate_steps-th
        backward pass (each step makes exactly that many)."""
        hvd = self.hvd
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        compression = hvd.Compression.fp16 if self.compression == "fp16" else hvd.Compression.none
        return model, hvd.DistributedOptimizer(
            optimizer,
            named_parameters=model.named_parameters(),
            compression=compression,
            backward_passes_per_step=accumulate_steps,
        )

    @staticmethod
    def no_sync(model: torch.nn.Module):
        return contextlib.nullcontext()  # DistributedOptimizer counts backward passes itself

    @staticmethod
    def finish_reduction(optimizer) -> None:
        """Wait for the all-reduces Horovod started in backward."""
        optimizer.synchronize()

    @staticmethod
    def step(optimizer, scaler) -> None:
        """After finish_reduction, in Horovod's order (its PyTorch AMP example): unscale the averaged
        gradients, then step without all-reducing them again."""
        if scaler is not None:
            scaler.unscale_(optimizer)
        with optimizer.skip_synchronize():
            optimizer_step(optimizer, scaler)

    def after_restore(self, model, optimizer) -> None:
        # Broadcast the optimizer state only once it exists: for an empty Adam state Horovod takes a
        # zero step first, which changes Adam's bias correction and so the whole run.
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def gather_rows(self, row: list[float]) -> np.ndarray:
        mine = torch.tensor([row], dtype=torch.float64, device=self.device)
        return self.hvd.allgather(mine, name="rows").cpu().numpy()

    def missing_ranks(self, failure: RuntimeError) -> RuntimeError:
        return failure  # Horovod's own error names the ranks it lost

    def shutdown(self) -> None:
        self.hvd.shutdown()

    def close(self) -> None:
        """Nothing of ours runs beside Horovod's own threads, which hvd.shutdown ends."""
