"""How torch_dist's ranks find each other and which communicator they talk through: DDP
(torch_dist.ddp: torch.distributed with DistributedDataParallel, gloo on CPU, nccl on GPU) or Horovod
(torch_dist.horovod_comm). Both offer the same few operations: wrap the model and optimizer for the
engine, finish the gradients' reduction and step, the loop's collectives (launch.run.comm.Communicator:
a row from every rank, a barrier), and a clean shutdown.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from launch import log
from launch.cluster import rendezvous
from launch.cluster.devices import backend_on, gpu_for_rank
from launch.cluster.world import World, with_hosts
from launch.config import DistConfig
from torch_dist.ddp import DDP
from torch_dist.horovod_comm import Horovod


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


def _use(gpu: int | None) -> torch.device:
    if gpu is None:
        return torch.device("cpu")
    torch.cuda.set_device(gpu)
    return torch.device("cuda", gpu)
