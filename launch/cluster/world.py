"""Who am I? Rank, world size, local rank, node and rendezvous address, from the launcher's environment.

Sources, in order of precedence (the first one present wins):
  1. torchrun / env://  RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT.
     torchrun is often itself started by srun or mpirun (one agent per node); then the outer
     launcher's variables describe the agents, and torchrun's describe the real workers.
  2. OpenMPI            OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}. Under `mpirun` inside a
     Slurm allocation the SLURM_* variables describe the batch step, not the MPI ranks.
  3. horovodrun (Gloo)  HOROVOD_RANK, HOROVOD_SIZE, HOROVOD_LOCAL_RANK, HOROVOD_LOCAL_SIZE
     (`horovodrun --mpi` is OpenMPI's mpirun underneath: source 2).
  4. PMI (Hydra)        PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS (MPICH, Intel MPI,
     `srun --mpi=pmi2`). PMIx launchers (OpenMPI's mpirun, `srun --mpi=pmix`) export only PMIX_RANK
     of their own, but always with their launcher's variables above or below, which are used.
  5. Slurm step         SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_NODEID,
     SLURM_STEP_TASKS_PER_NODE, SLURM_STEP_NODELIST (only inside an `srun` step: a batch script
     itself, which lacks SLURM_STEP_NUM_TASKS, is one process).
  6. TF_CONFIG          TensorFlow's own convention (its multi-worker guide, Kubeflow's TFJob): the
     cluster's chief and worker addresses and this task's type and index. With a launcher above,
     TF_CONFIG must agree with it (rank and world size), else it is an error naming both; a TF_CONFIG
     without "task" supplies only the cluster, and the launcher the rank.
  7. a single process   rank 0 of 1.
The master is rank 0's host: MASTER_ADDR when set, else the first host of the Slurm node list,
else 127.0.0.1 when every rank is on this node. The port is MASTER_PORT when set, else derived from
the job id (Slurm's job id, OpenMPI's job id: two jobs on one node do not collide), else 29500.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from launch.cluster.hostlist import expand_hostlist, parse_tasks_per_node
from launch.errors import WorldError

DEFAULT_PORT = 29500
PORT_BASE, PORT_SPAN = 20000, 10000  # ports derived from a job id: below Linux's ephemeral range (32768+)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    source: str = "single"  # torchrun | openmpi | horovod | pmi | slurm | tf_config | single
    job_id: str | None = None  # stable across restarts of one job, where the launcher gives one
    hosts: tuple[str, ...] = ()  # the node list, where the launcher gives one
    restarts: int = 0  # how often torchrun restarted the workers, or Slurm requeued the job
    tf_workers: tuple[str, ...] = ()  # host:port of every rank, in rank order, from TF_CONFIG
    launcher: str = ""  # who started the ranks, where not `source`: mnist-dist's local launcher
    # False where the launcher did not say which ranks share a host (RANK and WORLD_SIZE alone, as
    # Kubeflow's PyTorchJob gives them): then local_* and the node counts are guesses until the
    # ranks have told each other their host names (with_hosts).
    locals_known: bool = True

    @property
    def started_by(self) -> str:
        return self.launcher or self.source

    @property
    def host(self) -> str:
        """This rank's host, for messages: the node list's entry, else this machine's name."""
        return self.hosts[self.node_rank] if len(self.hosts) > self.node_rank else socket.gethostname()

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def torch_env(self) -> dict[str, str]:
        """The variables PyTorch's env:// rendezvous reads, for processes started without torchrun."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def with_hosts(world: World, hosts: Sequence[str]) -> World:
    """The world once every rank's host name is known (hosts[r] is rank r's): the ranks that share
    this rank's host, and the hosts in the order of their lowest rank."""
    nodes = tuple(dict.fromkeys(hosts))
    mine = hosts[world.rank]
    return dataclasses.replace(
        world,
        local_rank=list(hosts[: world.rank]).count(mine),
        local_size=list(hosts).count(mine),
        node_rank=nodes.index(mine),
        num_nodes=len(nodes),
        hosts=nodes,
        locals_known=True,
    )


def worker_addresses(world: World) -> list[str]:
    """host:port of every rank, for TensorFlow's TF_CONFIG. Ranks fill nodes in order (as srun's and
    mpirun's default block placement do), and rank r listens on the master port + 1 + its local rank.
    A TF_CONFIG given to the job names them itself."""
    if world.tf_workers:
        return list(world.tf_workers)
    if not world.locals_known:
        raise WorldError(
            f"{world.source} gave rank and world size but not which ranks share a host, and TensorFlow "
            "needs every worker's address: set LOCAL_WORLD_SIZE and LOCAL_RANK, or TF_CONFIG"
        )
    hosts = [world.master_addr] * world.size if world.num_nodes == 1 else rank_hosts(world)
    if not hosts:
        raise WorldError(
            f"cannot place {world.size} {world.source} ranks on {world.num_nodes} nodes: TensorFlow "
            "needs every worker's host; pass `mnist-dist run --hosts node1,node2,...` (the same list on "
            "every node), set TF_CONFIG, or start it under Slurm with equal tasks per node"
        )
    # An ephemeral master port (torchrun --standalone picks one) has neighbours that outgoing
    # connections take at any moment: move such a base below Linux's ephemeral range (32768+).
    base = world.master_port if world.master_port < 32768 else PORT_BASE + world.master_port % PORT_SPAN
    return [f"{host}:{base + 1 + r % world.local_size}" for r, host in enumerate(hosts)]


def rank_hosts(world: World) -> list[str]:
    """Each rank's host, where the world tells (one node, or equal ranks per node filled in order); else []."""
    if world.num_nodes == 1:
        return [world.host] * world.size
    if len(world.hosts) == world.num_nodes and world.size == world.local_size * world.num_nodes:
        return [world.hosts[r // world.local_size] for r in range(world.size)]
    return []


def tf_config(world: World) -> dict:
    """TF_CONFIG for MultiWorkerMirroredStrategy: every rank is a worker; rank 0 is the chief."""
    return {"cluster": {"worker": worker_addresses(world)}, "task": {"type": "worker", "index": world.rank}}


def port_for_job(job_id: str) -> int:
    """A port in 20000-29999 that depends only on the job id."""
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return PORT_BASE + number % PORT_SPAN


def detect_world(env: Mapping[str, str] | None = None, expand: Callable[[str], list[str]] = expand_hostlist) -> World:
    env = os.environ if env is None else env
    world = _detect(env, expand)
    # mnist-dist's local launcher names its job and counts its restarts like torchrun and Slurm do
    restarts = (
        _int(env, "TORCHELASTIC_RESTART_COUNT", 0)
        or _int(env, "SLURM_RESTART_COUNT", 0)
        or _int(env, "MNIST_DIST_RESTART_COUNT", 0)
    )
    job_id = world.job_id or env.get("MNIST_DIST_JOB_ID")
    # the local launcher gives its ranks torchrun's variables, and its own job id
    local = "MNIST_DIST_JOB_ID" in env and world.source == "torchrun" and "TORCHELASTIC_RUN_ID" not in env
    return dataclasses.replace(world, restarts=restarts, job_id=job_id, launcher="local" if local else "")


def _detect(env: Mapping[str, str], expand: Callable[[str], list[str]]) -> World:
    launched = _from_launcher(env, expand)
    if not env.get("TF_CONFIG"):
        return launched or World()
    return _with_tf_config(launched, env)


def _from_launcher(env: Mapping[str, str], expand: Callable[[str], list[str]]) -> World | None:
    if "RANK" in env and "WORLD_SIZE" in env:
        return _checked(_from_torchrun(env))
    if "OMPI_COMM_WORLD_RANK" in env:
        return _checked(
            _from_mpi(
                env,
                "openmpi",
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE",
                env.get("OMPI_MCA_ess_base_jobid") or env.get("PMIX_NAMESPACE"),
                expand,
            )
        )
    if "HOROVOD_RANK" in env and "HOROVOD_SIZE" in env:
        return _checked(
            _from_mpi(
                env,
                "horovod",
                "HOROVOD_RANK",
                "HOROVOD_SIZE",
                "HOROVOD_LOCAL_RANK",
                "HOROVOD_LOCAL_SIZE",
                env.get("HOROVOD_GLOO_RENDEZVOUS_PORT"),
                expand,
            )
        )
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        return _checked(
            _from_mpi(
                env, "pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", env.get("PMI_JOBID"), expand
            )
        )
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        return _checked(_from_slurm(env, expand))
    return None


def _with_tf_config(launched: World | None, env: Mapping[str, str]) -> World:
    """The world from TF_CONFIG, or the launcher's world checked against it. Rank order is the
    chief (if any) and then the workers, as MultiWorkerMirroredStrategy numbers them."""
    try:
        spec = json.loads(env["TF_CONFIG"])
        cluster, task = spec["cluster"], spec.get("task")
        addresses = [str(a) for a in cluster.get("chief", [])] + [str(a) for a in cluster.get("worker", [])]
        hosts = [a.rsplit(":", 1)[0] for a in addresses]
        ports = [int(a.rsplit(":", 1)[1]) for a in addresses]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise WorldError(
            'TF_CONFIG is not {"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
            '"worker", "index": N}}: fix it, or unset it and let the launcher give the rank'
        ) from None
    if not addresses:
        raise WorldError('TF_CONFIG\'s cluster has no chief or worker addresses: list them under "worker"')
    rank = None
    if task:
        kind, index = task.get("type"), task.get("index", 0)
        if kind not in ("chief", "worker"):
            raise WorldError(
                f"TF_CONFIG task type {kind!r}: MultiWorkerMirroredStrategy runs only chief and worker "
                "tasks; give this process a worker task"
            )
        rank = index if kind == "chief" else len(cluster.get("chief", [])) + index
        if not 0 <= rank < len(addresses):
            raise WorldError(f"TF_CONFIG task {kind} {index} is not in its cluster of {len(addresses)}: fix its index")
    if launched is not None:
        if len(addresses) != launched.size or rank not in (None, launched.rank):
            said = f"rank {rank} of {len(addresses)}" if rank is not None else f"a world of {len(addresses)}"
            raise WorldError(
                f"TF_CONFIG says {said} but {launched.source} says rank {launched.rank} of "
                f"{launched.size}: unset TF_CONFIG, or make it agree with the launcher"
            )
        return dataclasses.replace(launched, tf_workers=tuple(addresses))
    if rank is None:
        raise WorldError(
            'TF_CONFIG has no "task" and no launcher gives the rank: add "task": {"type": '
            '"worker", "index": N} for this process, or start it with a launcher'
        )
    nodes = list(dict.fromkeys(hosts))  # distinct hosts, in rank order
    peers = [r for r, h in enumerate(hosts) if h == hosts[rank]]
    return _checked(
        World(
            rank=rank,
            size=len(addresses),
            local_rank=peers.index(rank),
            local_size=len(peers),
            node_rank=nodes.index(hosts[rank]),
            num_nodes=len(nodes),
            master_addr=env.get("MASTER_ADDR") or hosts[0],
            master_port=_int(env, "MASTER_PORT", ports[0]),
            source="tf_config",
            hosts=tuple(nodes),
            tf_workers=tuple(addresses),
        )
    )


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise WorldError(f"{name} is not set; start the job with its launcher or set it")
        return default
    try:
        return int(value)
    except ValueError:
        raise WorldError(f"{name}={value!r} is not an integer; fix the launcher environment") from None


def _from_torchrun(env) -> World:
    rank, size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    local_size = _int(env, "LOCAL_WORLD_SIZE", size)
    if size > 1 and not env.get("MASTER_ADDR"):
        raise WorldError(
            "RANK/WORLD_SIZE are set but MASTER_ADDR is not: use torchrun, or export "
            "MASTER_ADDR and MASTER_PORT for env:// rendezvous"
        )
    run_id = env.get("TORCHELASTIC_RUN_ID")
    return World(
        rank=rank,
        size=size,
        local_rank=_int(env, "LOCAL_RANK", 0),
        local_size=local_size,
        node_rank=_int(env, "GROUP_RANK", rank // max(local_size, 1)),
        num_nodes=max(size // max(local_size, 1), 1),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
        source="torchrun",
        job_id=None if run_id in (None, "", "none") else run_id,
        locals_known=size == 1 or "LOCAL_WORLD_SIZE" in env,
    )


def _from_mpi(env, source, rank_var, size_var, local_rank_var, local_size_var, job_id, expand) -> World:
    rank, size = _int(env, rank_var), _int(env, size_var)
    local_size = _int(env, local_size_var, size)
    hosts: tuple[str, ...] = ()
    if env.get("MASTER_ADDR"):
        master = env["MASTER_ADDR"]
    elif local_size == size:
        master = "127.0.0.1"
    elif env.get("SLURM_JOB_NODELIST"):
        hosts = tuple(expand(env["SLURM_JOB_NODELIST"]))
        master = hosts[0]  # mpirun places rank 0 on the allocation's first node by default
    else:
        raise WorldError(
            f"{source} ranks span several nodes but MASTER_ADDR is not set: pass "
            "`-x MASTER_ADDR=<rank 0's host>` to mpirun"
        )
    return World(
        rank=rank,
        size=size,
        local_rank=_int(env, local_rank_var, rank),
        local_size=local_size,
        node_rank=rank // max(local_size, 1),
        num_nodes=max(size // max(local_size, 1), 1),
        master_addr=master,
        master_port=_port(env, job_id),
        source=source,
        job_id=job_id,
        hosts=hosts,
    )


def _from_slurm(env, expand) -> World:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise WorldError(
            "SLURM_PROCID is set but no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST: "
            "start the job with srun inside an allocation"
        )
    hosts = tuple(expand(nodelist))
    node_rank = _int(env, "SLURM_NODEID", 0)
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    try:
        counts = parse_tasks_per_node(per_node) if per_node else [_int(env, "SLURM_STEP_NUM_TASKS")]
    except ValueError as exc:
        raise WorldError(str(exc)) from None
    if node_rank >= len(counts):
        raise WorldError(f"SLURM_NODEID={node_rank} but tasks-per-node {per_node!r} lists {len(counts)} nodes")
    job = env.get("SLURM_JOB_ID")
    step = env.get("SLURM_STEP_ID")
    return World(
        rank=_int(env, "SLURM_PROCID"),
        size=_int(env, "SLURM_STEP_NUM_TASKS"),
        local_rank=_int(env, "SLURM_LOCALID", 0),
        local_size=counts[node_rank],
        node_rank=node_rank,
        num_nodes=len(hosts),
        master_addr=env.get("MASTER_ADDR") or hosts[0],
        master_port=_port(env, job),
        source="slurm",
        hosts=hosts,
        # a requeued job keeps its id and restarts its step numbers, so it finds its run again
        job_id=f"{job}.{step}" if job and step else job,
    )


def _port(env, job_id: str | None) -> int:
    if env.get("MASTER_PORT"):
        return _int(env, "MASTER_PORT")
    return port_for_job(job_id) if job_id else DEFAULT_PORT


def _checked(world: World) -> World:
    problems = []
    if world.size < 1:
        problems.append(f"world size {world.size} < 1")
    if not 0 <= world.rank < world.size:
        problems.append(f"rank {world.rank} outside 0..{world.size - 1}")
    if not 0 <= world.local_rank < world.local_size:
        problems.append(f"local rank {world.local_rank} outside 0..{world.local_size - 1}")
    if not 0 < world.master_port < 65536:
        problems.append(f"port {world.master_port} outside 1..65535")
    if problems:
        raise WorldError(f"inconsistent {world.source} environment: {'; '.join(problems)}")
    return world
