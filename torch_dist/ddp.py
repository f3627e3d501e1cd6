"""DistributedDataParallel: the process group (gloo on CPU, nccl on GPU), the wrapped model whose
backward averages the gradients (through the hook dist.compression names), the optimizer step, and
the loop's collectives over the group. One DDP step, end to end, is walked in docs/trainers.md.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from launch.cluster import rendezvous
from launch.cluster.world import World
from launch.config import DistConfig
from launch.errors import ConfigError
from launch.run.comm import GatheringBarrier
from torch_dist.checkpoint import torch_version
from torch_dist.heartbeats import Heartbeats


class DDP(GatheringBarrier):
    """torch.distributed with DistributedDataParallel. A single process gets a process group only
    when a backend was asked for by name: then its DDP and collectives run (and can be measured, or
    checked on a one-GPU machine) exactly as with more ranks; with `auto` it trains plainly ("none")."""

    def __init__(self, backend: str, world: World, options: DistConfig, device: torch.device, store=None):
        self.name, self.options, self.heartbeats = backend, options, None
        self.device = device  # where the rows it gathers live: the rank's GPU under nccl
        self.hook_state = None  # PowerSGD's state (its error feedback and warm-start matrices)
        timeout_s = options.timeout
        timeout = timedelta(seconds=timeout_s)
        if world.size > 1:
            rendezvous.check_master(world, world.master_addr, world.master_port, timeout_s)
            rendezvous.choose_gloo_interface(world, world.master_addr)
            if backend == "nccl":
                nccl_errors_raise()
            with rendezvous.deadline(world, world.master_addr, world.master_port, timeout_s):
                try:
                    dist.init_process_group(
                        backend,
                        rank=world.rank,
                        world_size=world.size,
                        timeout=timeout,
                        **_group_options(world, device, store or _attempt_store(world, timeout)),
                    )
                except RuntimeError as exc:  # DistBackendError from torch 2.1 on
                    raise _shared_gpu(exc, world) from None
            self.heartbeats = Heartbeats(world)
        elif options.backend != "auto":  # asked for by name
            alone = _group_options(world, device, dist.HashStore())
            dist.init_process_group(backend, rank=0, world_size=1, timeout=timeout, **alone)
        else:
            self.name = "none"

    def wrap(self, model: torch.nn.Module, optimizer, device: torch.device, accumulate_steps: int = 1):
        """DDP broadcasts rank 0's parameters at construction, then averages gradients in backward,
        through the communication hook dist.compression names."""
        if not dist.is_initialized():
            return model, optimizer  # one worker (launch.frameworks refused compression for it)
        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True, bucket_cap_mb=self.options.bucket_mb
        )
        compression = self.options.compression
        if compression in ("fp16", "bf16"):
            hook = default_hooks.fp16_compress_hook if compression == "fp16" else default_hooks.bf16_compress_hook
            try:
                ddp.register_comm_hook(state=None, hook=hook)
            except TypeError as exc:  # DDP allows bf16 only on builds with CUDA 11+ and NCCL 2.10+ (or XPU)
                raise ConfigError(f"dist.compression={compression}: {exc}; this torch build cannot, use fp16") from None
        elif compression == "powersgd":
            state = powerSGD_hook.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=self.options.powersgd_rank,
                start_powerSGD_iter=self.options.powersgd_start,
                use_error_feedback=True,
                warm_start=True,
            )
            ddp.register_comm_hook(state=state, hook=powerSGD_hook.powerSGD_hook)
            self.hook_state = state
        return ddp, optimizer

    @staticmethod
    def no_sync(model: torch.nn.Module):
        """A context in which backward keeps gradients local: DDP's no_sync (nothing to sync alone)."""
        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    @staticmethod
    def finish_reduction(optimizer) -> None:
        """Nothing left: DDP's last backward returns once the gradients are averaged."""

    @staticmethod
    def step(optimizer, scaler) -> None:
        """DDP averaged the gradients in backward: a plain step."""
        optimizer_step(optimizer, scaler)

    def after_restore(self, model, optimizer) -> None:
        """Every rank loaded the same checkpoint: nothing to send."""

    def gather_rows(self, row: list[float]) -> np.ndarray:
        """Every rank's row of numbers, as a (world, len(row)) float64 array on every rank."""
        mine = torch.tensor(row, dtype=torch.float64, device=self.device)
        if not dist.is_initialized():
            return mine.cpu().numpy()[None]
        rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, mine)  # every torch release and backend has it (all_gather_single: 2.13+)
        return torch.stack(rows).cpu().numpy()

    def missing_ranks(self, failure: RuntimeError) -> RuntimeError:
        """`failure` of a collective, with the ranks that stopped answering named (a timed-out gloo
        recv does not say whose it was)."""
        # Only the store's own host reads it: from a host cut off, the read would hang on TCP itself.
        lost = self.heartbeats.lost() if self.heartbeats and self.heartbeats.world.node_rank == 0 else None
        return RuntimeError(f"{lost} ({str(failure).splitlines()[0]})") if lost else failure

    def shutdown(self) -> None:
        """Leave the group without the exit-time abort seen after a bare destroy_process_group: stop
        beating (no beat meets a store being torn down), wait for every rank, let DDP's reducer be
        freed (the caller dropped its model), then destroy."""
        self.close()
        if not dist.is_initialized():
            return
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()

    def close(self) -> None:
        """Stop this rank's background work: on every way out, a failed one too (again is harmless)."""
        if self.heartbeats:
            self.heartbeats.close()


def optimizer_step(optimizer, scaler) -> None:
    """One optimizer step; with fp16, through the GradScaler, which skips a step whose gradients overflowed."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def _attempt_store(world: World, timeout: timedelta) -> dist.Store | None:
    """Under torchrun, its agent's store, with this attempt's keys apart from a restarted job's dead
    attempts: the static rendezvous keeps one store across restarts, where gloo and NCCL would read
    the dead ranks' addresses (pytorch#135712)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":  # as torch.distributed.rendezvous reads it
        return None  # no agent (mnist-dist's local launcher gives torchrun's variables without one)
    agent = dist.TCPStore(world.master_addr, world.master_port, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"mnist-dist/attempt-{world.restarts}", agent)


def _group_options(world: World, device: torch.device, store) -> dict:
    """Where init_process_group meets the other ranks, and (torch 2.3+) the GPU it binds to at once."""
    if store:  # find_hosts' store, or torchrun's agent's (_attempt_store), already serving MASTER_PORT
        options = {"store": store}
    else:  # env:// where torchrun's variables name the master, as they do under the local launcher
        url = "env://" if world.source == "torchrun" else f"tcp://{world.master_addr}:{world.master_port}"
        options = {"init_method": url}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        options["device_id"] = device  # NCCL connects here, under the rendezvous deadline, not at the first step
    return options


def _shared_gpu(failure: Exception, world: World) -> Exception:
    """NCCL's "invalid usage" at the start, where this node's ranks outnumber the GPUs each sees, is
    two ranks on one GPU (NCCL_DEBUG=WARN shows "Duplicate GPU detected"): said so, with the fix."""
    seen = torch.cuda.device_count()
    if "invalid usage" not in str(failure) or seen >= world.local_size:
        return failure
    bound = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ConfigError(
        f"NCCL refused to start: {world.local_size} ranks share this node and each sees {seen} GPU(s) "
        f"(CUDA_VISIBLE_DEVICES={bound}), so two of them are on one GPU; start at most {seen} rank(s) "
        "per node, or give each rank its own GPU (CUDA_VISIBLE_DEVICES per rank, srun --gpus-per-task=1)"
    )


def nccl_errors_raise() -> None:
    """By default NCCL's watchdog ends the process on a failed or timed-out collective (a C++ abort,
    past the "lost rank R on HOST" line). Asked to only abort its communicators, it raises the error
    in the rank's own thread instead, where the loop names the lost ranks. The user's choice stands."""
    name = "TORCH_NCCL_ASYNC_ERROR_HANDLING" if torch_version() >= (2, 2) else "NCCL_ASYNC_ERROR_HANDLING"
    os.environ.setdefault(name, "2")  # CleanUpOnly
