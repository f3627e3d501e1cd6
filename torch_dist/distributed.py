"""How torch_dist's ranks talk: torch.distributed with DistributedDataParallel (gloo on CPU, nccl on
GPU), or Horovod. Both offer the same few operations: wrap the model and optimizer for the engine,
the loop's collectives (launch.run.comm.Communicator: a row from every rank, a barrier), and a clean
shutdown.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import socket
import threading
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from launch import log
from launch.cluster import rendezvous
from launch.cluster.devices import backend_on, gpu_for_rank
from launch.cluster.world import World, with_hosts
from launch.config import DistConfig
from launch.errors import ConfigError


def find_hosts(world: World, timeout_s: float) -> tuple[World, dist.Store | None]:
    """Where the launcher did not say which ranks share a host, ask them: every rank posts its host
    name on the rendezvous store and reads the others'. The world then has true local ranks and node
    counts (for devices, threads, gloo's interface and the summary); the store serves the process
    group next, on the one port the launcher gave."""
    if world.locals_known:
        return world, None
    rendezvous.check_master(world, world.master_addr, world.master_port, timeout_s)
    with rendezvous.deadline(world, world.master_addr, world.master_port, timeout_s):
        store = dist.TCPStore(
            world.master_addr, world.master_port, world.size, world.is_chief, timedelta(seconds=timeout_s)
        )
        store.set(f"mnist-dist/hostname/{world.rank}", socket.gethostname())
        hosts = [store.get(f"mnist-dist/hostname/{r}").decode() for r in range(world.size)]  # get waits
    world = with_hosts(world, hosts)
    if world.is_chief:
        log.get().info(
            f"{world.num_nodes} host(s) by the ranks' own names ({', '.join(world.hosts)}): "
            f"{world.source} did not say which ranks share a host"
        )
    return world, store


def connect(options: DistConfig, world: World, gpus: int, store: dist.Store | None = None):
    """The communicator for the dist section's backend, and this rank's device (launch.cluster.devices);
    `store` is find_hosts' rendezvous store, where it made one."""
    if options.backend == "horovod":
        comm = Horovod(world, options.compression)  # Horovod counts its own local ranks
        comm.device = _use(gpu_for_rank(gpus, comm.hvd.local_rank(), comm.hvd.local_size()))
        return comm, comm.device
    gpu = None if options.backend == "gloo" else gpu_for_rank(gpus, world.local_rank, world.local_size)
    device = _use(gpu)  # before the group: NCCL makes its communicator on the current device
    return DDP(backend_on(options.backend, gpu), world, options, device, store), device


def _group_options(world: World, device: torch.device, store) -> dict:
    """Where init_process_group meets the other ranks, and (torch 2.3+) the GPU it binds to at once."""
    if store:
        options = {"store": store}  # find_hosts' store, already serving MASTER_PORT
    else:  # torchrun's agent already serves the rendezvous store on MASTER_PORT: env:// reuses it
        url = "env://" if world.source == "torchrun" else f"tcp://{world.master_addr}:{world.master_port}"
        options = {"init_method": url}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        options["device_id"] = device  # NCCL connects here, under the rendezvous deadline, not at the first step
    return options


def nccl_errors_raise() -> None:
    """By default NCCL's watchdog ends the process on a failed or timed-out collective (a C++ abort,
    past the "lost rank R on HOST" line). Asked to only abort its communicators, it raises the error
    in the rank's own thread instead, where the loop names the lost ranks. The user's choice stands."""
    name = "TORCH_NCCL_ASYNC_ERROR_HANDLING" if _torch_at_least(2, 2) else "NCCL_ASYNC_ERROR_HANDLING"
    os.environ.setdefault(name, "2")  # CleanUpOnly


def _torch_at_least(major: int, minor: int) -> bool:
    return tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (major, minor)


def _use(gpu: int | None) -> torch.device:
    if gpu is None:
        return torch.device("cpu")
    torch.cuda.set_device(gpu)
    return torch.device("cuda", gpu)


class DDP:
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
            if world.rank == 0 and _restarts_reuse_the_agent_store():
                log.get().warning(
                    "torchrun --max-restarts with its shared rendezvous store: restarted workers can "
                    "read the dead attempt's addresses and fail (pytorch#135712); start torchrun with "
                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (mnist-dist run --launcher torchrun does)"
                )
            rendezvous.check_master(world, world.master_addr, world.master_port, timeout_s)
            rendezvous.choose_gloo_interface(world, world.master_addr)
            if backend == "nccl":
                nccl_errors_raise()
            with rendezvous.deadline(world, world.master_addr, world.master_port, timeout_s):
                dist.init_process_group(
                    backend,
                    rank=world.rank,
                    world_size=world.size,
                    timeout=timeout,
                    **_group_options(world, device, store),
                )
            self.heartbeats = Heartbeats(world)
        elif options.backend != "auto":  # asked for by name
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
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

    def barrier(self) -> None:
        self.gather_rows([0.0])

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


class Heartbeats:
    """Every rank counts up a key in the rendezvous store (rank 0's, or torchrun's agent's) every
    PERIOD seconds, on a connection of its own. After a failed collective, the ranks whose count no
    longer moves are the lost ones, and their hosts are named. Counts, not clocks: hosts' clocks
    need not agree."""

    PERIOD = 1.0
    TIMEOUT = timedelta(seconds=5)  # for every call on the store, lost()'s wait included

    def __init__(self, world: World):
        self.world, self.stop = world, threading.Event()
        self.store = dist.TCPStore(world.master_addr, world.master_port, is_master=False, timeout=self.TIMEOUT)
        self.store.set(f"mnist-dist/host/{world.rank}", world.host)
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop beating and wait for the thread: a daemon thread still inside a store call when the
        interpreter exits ends the process with SIGABRT ("terminate called without an active
        exception"), whatever the exit code was to be."""
        self.stop.set()
        self.thread.join(self.TIMEOUT.total_seconds() + self.PERIOD)

    def _beat(self) -> None:
        while not self.stop.wait(self.PERIOD):
            with contextlib.suppress(Exception):  # a lost store is what lost() reports
                self.store.add(f"mnist-dist/beat/{self.world.rank}", 1)

    def lost(self) -> str | None:
        keys = [f"mnist-dist/beat/{r}" for r in range(self.world.size)]
        try:
            before = self.store.multi_get(keys)
            time.sleep(3 * self.PERIOD)  # long enough for every live rank to beat again
            after = self.store.multi_get(keys)
            lost = [r for r in range(self.world.size) if before[r] == after[r] and r != self.world.rank]
            hosts = self.store.multi_get([f"mnist-dist/host/{r}" for r in lost])
        except Exception:
            return None  # the store is gone too: the failure's own words must do
        if not lost:
            return None
        return "lost " + ", ".join(f"rank {r} on {h.decode()}" for r, h in zip(lost, hosts))


def optimizer_step(optimizer, scaler) -> None:
    """One optimizer step; with fp16, through the GradScaler, which skips a step whose gradients overflowed."""
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def _restarts_reuse_the_agent_store() -> bool:
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") != "0"
    )


class Horovod:
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

    def barrier(self) -> None:
        self.gather_rows([0.0])

    def missing_ranks(self, failure: RuntimeError) -> RuntimeError:
        return failure  # Horovod's own error names the ranks it lost

    def shutdown(self) -> None:
        self.hvd.shutdown()

    def close(self) -> None:
        """Nothing of ours runs beside Horovod's own threads, which hvd.shutdown ends."""
