"""Command lines for starting N workers: local processes, torchrun, mpirun; and the per-rank plan.

What each launcher prints while workers run:
  local     rank 0's lines as they are, every other rank's lines prefixed "[rank r] ";
  torchrun  torchrun's own: `--tee 3` prefixes every line "[default<r>]:" and writes per-rank
            files under <log.dir>/torchrun-logs/;
  mpirun    OpenMPI's own: `--tag-output` prefixes every line "[job,rank]<stdout>:";
  horovodrun  Horovod's own: every line prefixed "[rank]<stdout>:".
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field

from launch.errors import UserError
from launch.slurm import MODULES
from launch.world import World, tf_config

LAUNCHERS = ("local", "torchrun", "mpirun", "horovodrun", "slurm")
_LOOPBACK = ("127.", "localhost", "::1")


@dataclass
class Plan:
    """What a launcher will start: one command, or one (command, environment) per local rank."""

    framework: str
    worlds: list[World]  # one per rank, as each will discover itself
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the command's environment
    per_rank: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        head = ["rank", "local rank", "node", "master"] + (["TF_CONFIG"] if self.framework == "tf" else [])
        rows = []
        for w in self.worlds:
            row = [str(w.rank), str(w.local_rank), w.hosts[w.node_rank] if w.hosts else str(w.node_rank),
                   f"{w.master_addr}:{w.master_port}"]
            if self.framework == "tf":
                row.append(json.dumps(tf_config(w), separators=(",", ":")))
            rows.append(row)
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in [head] + rows)


def train_args(config: str | None, overrides: list[str]) -> list[str]:
    return (["--config", config] if config else []) + list(overrides)


def slurm_worlds(nodes: int, nproc: int) -> list[World]:
    """How the ranks of an sbatch job will see themselves, with placeholder node names, and the port
    derived as for job id 0 (the job uses 20000 + job id mod 10000)."""
    hosts = tuple(f"node{i}" for i in range(nodes))
    return [World(rank=r, size=nodes * nproc, local_rank=r % nproc, local_size=nproc, node_rank=r // nproc,
                  num_nodes=nodes, master_addr=hosts[0], master_port=20000, source="slurm", hosts=hosts)
            for r in range(nodes * nproc)]


def plan(framework: str, launcher: str, nproc: int, nodes: int = 1, node_rank: int = 0,
         master_addr: str = "127.0.0.1", master_port: int | None = None, config: str | None = None,
         overrides: list[str] = (), python: str = sys.executable, log_dir: str = "runs",
         max_restarts: int = 0, hosts: list[str] = (), min_nodes: int | None = None) -> Plan:
    """The plan for a local, torchrun or mpirun start of nodes x nproc workers (this node's part).
    `hosts` names every node in node-rank order: TensorFlow needs them all, mpirun starts ranks there.
    `min_nodes` below `nodes` makes a torchrun job elastic: it goes on while that many nodes are left."""
    if nproc < 1 or nodes < 1 or not 0 <= node_rank < nodes:
        raise UserError("--nproc and --nodes must be at least 1, and --node-rank in 0..nodes-1")
    min_nodes = min_nodes or nodes
    if min_nodes != nodes and (launcher, framework) != ("torchrun", "torch"):
        raise UserError(f"a node range ({min_nodes}:{nodes}) needs an elastic launcher: --launcher torchrun for torch, "
                        "or --launcher slurm (a requeued job resumes at the size it gets); TensorFlow's workers "
                        "are fixed while they run, so restart tf at the new size with checkpoint.resume=true")
    if hosts and len(hosts) != nodes:
        raise UserError(f"--hosts names {len(hosts)} node(s) but --nodes is {nodes}: list every node once")
    if framework == "tf" and nodes > 1 and not hosts and launcher in ("local", "torchrun"):
        raise UserError("TensorFlow needs every worker's address: pass --hosts node1,node2,... (the same list, in "
                        "node-rank order, on every node), or set TF_CONFIG yourself")
    if nodes > 1 and master_addr.startswith(_LOOPBACK):
        raise UserError(f"master address {master_addr} is a loopback address, which other nodes cannot reach: "
                        "pass --master-addr <the first node's hostname or IP>")
    port = master_port or (free_port() if nodes == 1 else 29500)
    if nodes == 1 and master_port and not port_is_free(master_port):
        raise UserError(f"port {master_port} is already in use on this machine: pass another --master-port, "
                        "or leave it out to pick a free one")
    module = MODULES[framework]
    args = train_args(config, list(overrides))
    size = nodes * nproc
    worlds = [World(rank=node_rank * nproc + r, size=size, local_rank=r, local_size=nproc, node_rank=node_rank,
                    num_nodes=nodes, master_addr=master_addr, master_port=port, source=launcher, hosts=tuple(hosts))
              for r in range(nproc)]
    result = Plan(framework, worlds)
    if launcher == "torchrun" and framework == "torch":
        rdzv = (["--standalone"] if nodes == 1 else
                ["--rdzv-backend=c10d", f"--rdzv-endpoint={master_addr}:{port}", f"--node-rank={node_rank}"])
        nnodes = f"{min_nodes}:{nodes}" if min_nodes != nodes else str(nodes)
        result.command = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}",
                          *rdzv, f"--max-restarts={max_restarts}", "--tee=3",
                          f"--log-dir={os.path.join(log_dir, 'torchrun-logs')}", "-m", module, *args]
        if max_restarts:
            result.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
            result.notes.append("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: each restart gets a fresh store; torchrun's "
                                "shared one hands restarted workers the dead attempt's addresses (pytorch#135712)")
        if nodes == 1:
            result.worlds = [dataclasses.replace(w, master_port=0) for w in worlds]
            result.notes.append("torchrun --standalone picks its own free rendezvous port (shown as 0)")
    elif launcher in ("local", "torchrun"):
        if launcher == "torchrun":
            result.notes.append("TensorFlow needs no torchrun agent: local processes get torchrun's environment")
        for w in worlds:
            # Across nodes TensorFlow gets its own convention too: every worker's address in TF_CONFIG.
            tf_env = {"TF_CONFIG": json.dumps(tf_config(w))} if framework == "tf" and nodes > 1 else {}
            result.per_rank.append(([python, "-m", module, *args], {**w.torch_env(), **tf_env}))
    elif launcher == "mpirun":
        result.command, notes = mpirun_command(size, nproc, nodes, master_addr, port, python, module, args, hosts)
        result.notes += notes
        if framework == "tf" and hosts:
            # The cluster for every rank; OpenMPI's rank picks the task (launch.world).
            result.env["TF_CONFIG"] = json.dumps({"cluster": tf_config(worlds[0])["cluster"]})
            result.command[1:1] = ["-x", "TF_CONFIG"]
    elif launcher == "horovodrun":
        if framework != "torch":
            raise UserError("horovodrun runs torch_dist only: Horovod's TensorFlow part does not build against "
                            "TensorFlow >= 2.16; use --launcher local, mpirun or slurm for tf")
        if nodes > 1:
            raise UserError("horovodrun here starts one node; for several use --launcher slurm --template mpi "
                            "with dist.backend=horovod")
        result.command = [horovodrun(python), "-np", str(nproc), "-H", f"localhost:{nproc}", python, "-m", module,
                          *args, "dist.backend=horovod"]
        result.notes.append("horovodrun: dist.backend=horovod added")
    else:
        raise UserError(f"launcher {launcher!r} is not one of local, torchrun, mpirun (slurm has its own plan)")
    return result


def mpirun_command(size: int, nproc: int, nodes: int, master_addr: str, port: int, python: str, module: str,
                   args: list[str], hosts: list[str] = ()) -> tuple[list[str], list[str]]:
    cmd, notes = ["mpirun", "-np", str(size), "--tag-output"], []
    if nproc > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
        notes.append(f"--oversubscribe: {nproc} ranks per node but {os.cpu_count()} cores here")
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
        notes.append("--allow-run-as-root: running as root")
    if hosts:
        cmd += ["--host", ",".join(f"{h}:{nproc}" for h in hosts)]
    if nodes > 1:
        cmd += ["--map-by", f"ppr:{nproc}:node", "-x", f"MASTER_ADDR={master_addr}", "-x", f"MASTER_PORT={port}"]
    return cmd + [python, "-m", module, *args], notes


def horovodrun(python: str) -> str:
    """The horovodrun installed beside this Python (a virtual environment's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(python), "horovodrun")
    return beside if os.path.exists(beside) else "horovodrun"


def preflight(launcher: str, framework: str) -> None:
    """Fail early, with the fix, when the launcher's program is missing."""
    fixes = {"mpirun": "install OpenMPI (Debian: openmpi-bin)",
             "horovodrun": "build and install Horovod with `python -m torch_dist.horovod_build`",
             "sbatch": "run on a Slurm login node, or install Slurm's client tools (Debian: slurm-client)"}
    needs = {"mpirun": ["mpirun"], "horovodrun": ["horovodrun"], "slurm": ["sbatch", "scontrol"]}.get(launcher, [])
    for program in needs:
        if shutil.which(horovodrun(sys.executable) if program == "horovodrun" else program) is None:
            raise UserError(f"{program} not found on PATH: {fixes.get(program, fixes['sbatch'])}")
    if launcher == "torchrun" and framework == "torch":
        try:
            import importlib.util

            found = importlib.util.find_spec("torch") is not None
        except ImportError:
            found = False
        if not found:
            raise UserError("torchrun needs PyTorch, which is not installed: pip install 'mnist-dist[torch]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_plan(result: Plan, max_restarts: int = 0) -> int:
    """Start the plan's workers, stream their output, and return the job's exit code: the first
    failing rank's (the others are then stopped) or 0. Local workers that fail are all restarted,
    up to `max_restarts` times, with one job id so they find their run directory and checkpoints."""
    if result.command:
        return subprocess.run(result.command, env={**os.environ, **result.env}).returncode
    job = {"MNIST_DIST_JOB_ID": uuid.uuid4().hex[:12]}
    for attempt in range(max_restarts + 1):
        extra = {**job, "MNIST_DIST_RESTART_COUNT": str(attempt)}
        procs = [subprocess.Popen(cmd, env={**os.environ, **env, **extra}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1) for cmd, env in result.per_rank]
        pumps = [threading.Thread(target=_pump, args=(p, w.rank), daemon=True) for p, w in zip(procs, result.worlds)]
        for t in pumps:
            t.start()
        code = _wait_fail_fast(procs, [w.rank for w in result.worlds])
        for t in pumps:
            t.join(timeout=10)
        if code == 0 or attempt == max_restarts:
            return code
        print(f"mnist-dist: restarting every rank from the latest checkpoint ({attempt + 1} of {max_restarts})",
              flush=True)
    return code


def _pump(proc: subprocess.Popen, rank: int) -> None:
    prefix = "" if rank == 0 else f"[rank {rank}] "
    for line in proc.stdout:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _wait_fail_fast(procs: list[subprocess.Popen], ranks: list[int]) -> int:
    """Wait for every process; when one fails, say which and stop the rest instead of letting them hang."""
    running = {p.pid: p for p in procs}
    rank_of = {p.pid: r for p, r in zip(procs, ranks)}
    while running:
        pid, status = os.wait()
        proc = running.pop(pid, None)
        if proc is None:
            continue  # some other child of ours
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exited with code {proc.returncode}")
            print(f"mnist-dist: rank {rank_of[pid]} (pid {pid}) {how}; stopping the other ranks", flush=True)
            for other in running.values():
                other.terminate()
            for other in running.values():
                try:
                    other.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    other.kill()
                    other.wait()
            return proc.returncode
    return 0
