"""Command lines for starting N workers: local processes, torchrun, mpirun, horovodrun; the per-rank
plan; and running it.

What each launcher prints while workers run:
  local       rank 0's lines as they are, every other rank's lines prefixed "[rank r] ";
  torchrun    torchrun's own: `--tee 3` prefixes every line "[default<r>]:" and writes per-rank
              files under <log.dir>/torchrun-logs/;
  mpirun      OpenMPI's own: `--tag-output` prefixes every line "[job,rank]<stdout>:";
  horovodrun  Horovod's own: every line prefixed "[job,rank]<stdout>:" (it runs OpenMPI's mpirun).
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
from pathlib import Path

from launch import log
from launch.clock import stamp
from launch.cluster import rendezvous
from launch.cluster.world import DEFAULT_PORT, World, port_for_job, tf_config
from launch.errors import UserError
from launch.frameworks import FRAMEWORKS
from launch.jobs import children, streams
from launch.jobs.jobspec import JobSpec
from launch.signals import PREEMPTED

_LOOPBACK = ("127.", "localhost", "::1")
_MPI_RANK_LINE = r"\[\d+,\d+\]<std(out|err)>:"  # OpenMPI's --tag-output, which horovodrun's mpirun uses too
_RANK_LINES = {"torchrun": r"\[[A-Za-z_]*\d+\]:", "mpirun": _MPI_RANK_LINE, "horovodrun": _MPI_RANK_LINE}


@dataclass
class Plan:
    """What a launcher will start: one command, or one (command, environment) per local rank."""

    framework: str
    worlds: list[World]  # one per rank, as each will discover itself
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the command's environment
    per_rank: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The command's: how a rank's line starts (a regex), and where its own lines go after a stop
    own_lines: tuple[str, str] | None = None

    def table(self) -> str:
        tf = FRAMEWORKS[self.framework].needs_tf_config
        head = ["rank", "local rank", "node", "master"] + (["TF_CONFIG"] if tf else [])
        rows = []
        for w in self.worlds:
            row = [
                str(w.rank),
                str(w.local_rank),
                w.hosts[w.node_rank] if w.hosts else str(w.node_rank),
                f"{w.master_addr}:{w.master_port}",
            ]
            if tf:
                row.append(json.dumps(tf_config(w), separators=(",", ":")))
            rows.append(row)
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in [head] + rows)


def rank_world(spec: JobSpec, rank: int, where: tuple[str, int, str, tuple[str, ...]]) -> World:
    """How rank `rank` of the job sees itself; `where`: its master address and port, the source
    of its world (the launcher) and every node's host name."""
    master_addr, master_port, source, hosts = where
    return World(
        rank=rank,
        size=spec.workers,
        local_rank=rank % spec.nproc,
        local_size=spec.nproc,
        node_rank=rank // spec.nproc,
        num_nodes=spec.nodes,
        master_addr=master_addr,
        master_port=master_port,
        source=source,
        hosts=hosts,
    )


def slurm_worlds(spec: JobSpec) -> list[World]:
    """How the ranks of an sbatch job will see themselves, with placeholder node names, and the port
    derived as for job id 0 (the job's is derived from its id the same way)."""
    hosts = tuple(f"node{i}" for i in range(spec.nodes))
    return [rank_world(spec, r, (hosts[0], port_for_job("0"), "slurm", hosts)) for r in range(spec.workers)]


def validate(spec: JobSpec) -> None:
    """Refuse a placement that cannot be started (launch.frameworks.check refuses what cannot run)."""
    if spec.nproc < 1 or spec.nodes < 1 or not 0 <= spec.node_rank < spec.nodes:
        raise UserError("--nproc and --nodes must be at least 1, and --node-rank in 0..nodes-1")
    if spec.hosts and len(spec.hosts) != spec.nodes:
        raise UserError(f"--hosts names {len(spec.hosts)} node(s) but --nodes is {spec.nodes}: list every node once")
    if spec.nodes > 1 and spec.master_addr.startswith(_LOOPBACK):
        raise UserError(
            f"master address {spec.master_addr} is a loopback address, which other nodes cannot reach: "
            "pass --master-addr <the first node's hostname or IP>"
        )
    if spec.nodes == 1 and spec.master_port and not port_is_free(spec.master_port):
        raise UserError(
            f"port {spec.master_port} is already in use on this machine: pass another --master-port, "
            "or leave it out to pick a free one"
        )


def plan(spec: JobSpec) -> Plan:
    """The plan for a local, torchrun, mpirun or horovodrun start of this node's part of the job."""
    validate(spec)
    port = spec.master_port or (free_port() if spec.nodes == 1 else DEFAULT_PORT)
    where = (spec.master_addr, port, spec.launcher, spec.hosts)
    worlds = [rank_world(spec, spec.node_rank * spec.nproc + r, where) for r in range(spec.nproc)]
    result = Plan(spec.framework, worlds)
    if spec.launcher == "torchrun" and FRAMEWORKS[spec.framework].torchrun_agent:
        _torchrun(spec, port, result)
    elif spec.launcher in ("local", "torchrun"):
        _local(spec, result)
    elif spec.launcher == "mpirun":
        _mpirun(spec, port, result)
    elif spec.launcher == "horovodrun":
        result.command = [
            horovodrun(spec.python),
            "-np",
            str(spec.nproc),
            "-H",
            f"localhost:{spec.nproc}",
            spec.python,
            "-m",
            spec.module,
            *spec.train_args("dist.backend=horovod"),
        ]
        result.notes.append("horovodrun: dist.backend=horovod added")
    else:
        raise UserError(f"launcher {spec.launcher!r} is not one of local, torchrun, mpirun (slurm has its own plan)")
    if result.command:
        held_in = os.path.join(spec.log_dir, "launcher-logs", f"{spec.launcher}-{stamp()}-{os.getpid()}.log")
        result.own_lines = (_RANK_LINES[spec.launcher], held_in)
    return result


def _torchrun(spec: JobSpec, port: int, result: Plan) -> None:
    if spec.elastic:  # c10d admits and loses nodes; it orders them itself (a node rank would be ignored)
        rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint={spec.master_addr}:{port}"]
    else:  # a fixed set of nodes: the static rendezvous (c10d's, --standalone's too, loads a pickle from the store)
        rdzv = ["--rdzv-backend=static", f"--master-addr={spec.master_addr}", f"--master-port={port}"]
        rdzv.append(f"--node-rank={spec.node_rank}")
    nnodes = f"{spec.lowest_nodes}:{spec.nodes}" if spec.elastic else str(spec.nodes)
    result.command = [
        spec.python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={spec.nproc}",
        *rdzv,
        f"--max-restarts={spec.max_restarts}",
        "--tee=3",
        f"--log-dir={os.path.join(spec.log_dir, 'torchrun-logs')}",
        "-m",
        spec.module,
        *spec.train_args(),
    ]
    if spec.threads and "OMP_NUM_THREADS" not in os.environ:
        # torchrun sets 1 with a four-line banner unless told; the trainer sets its own thread count anyway
        result.env["OMP_NUM_THREADS"] = str(spec.threads)


def _local(spec: JobSpec, result: Plan) -> None:
    fw = FRAMEWORKS[spec.framework]
    if spec.launcher == "torchrun":
        result.notes.append(f"{spec.framework} needs no torchrun agent: local processes get torchrun's environment")
    for w in result.worlds:
        # Across nodes TensorFlow gets its own convention too: every worker's address in TF_CONFIG.
        tf_env = {"TF_CONFIG": json.dumps(tf_config(w))} if fw.needs_tf_config and spec.nodes > 1 else {}
        result.per_rank.append(([spec.python, "-m", spec.module, *spec.train_args()], {**w.torch_env(), **tf_env}))


def _mpirun(spec: JobSpec, port: int, result: Plan) -> None:
    cmd = ["mpirun", "-np", str(spec.workers), "--tag-output"]
    if spec.nproc > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
        result.notes.append(f"--oversubscribe: {spec.nproc} ranks per node but {os.cpu_count()} cores here")
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
        result.notes.append("--allow-run-as-root: running as root")
    if spec.hosts:
        cmd += ["--host", ",".join(f"{h}:{spec.nproc}" for h in spec.hosts)]
    if spec.nodes > 1:
        cmd += [
            "--map-by",
            f"ppr:{spec.nproc}:node",
            "-x",
            f"MASTER_ADDR={spec.master_addr}",
            "-x",
            f"MASTER_PORT={port}",
        ]
    # One mpirun starts every node's ranks, so the plan lists them all.
    result.worlds = [
        dataclasses.replace(w, rank=k * spec.nproc + w.local_rank, node_rank=k)
        for k in range(spec.nodes)
        for w in result.worlds
    ]
    if FRAMEWORKS[spec.framework].needs_tf_config and spec.hosts:
        # The cluster for every rank; OpenMPI's rank picks the task (launch.cluster.world).
        result.env["TF_CONFIG"] = json.dumps({"cluster": tf_config(result.worlds[0])["cluster"]})
        cmd[1:1] = ["-x", "TF_CONFIG"]
    result.command = cmd + [spec.python, "-m", spec.module, *spec.train_args()]


def horovodrun(python: str) -> str:
    """The horovodrun installed beside this Python (a virtual environment's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(python), "horovodrun")
    return beside if os.path.exists(beside) else "horovodrun"


def preflight(launcher: str, framework: str) -> None:
    """Fail early, with the fix, when the launcher's program is missing."""
    fixes = {
        "mpirun": "install OpenMPI (Debian: openmpi-bin)",
        "horovodrun": "build and install Horovod with `python -m torch_dist.horovod_build`",
        "sbatch": "run on a Slurm login node, or install Slurm's client tools (Debian: slurm-client)",
    }
    needs = {"mpirun": ["mpirun"], "horovodrun": ["horovodrun"], "slurm": ["sbatch", "scontrol"]}.get(launcher, [])
    for program in needs:
        if shutil.which(horovodrun(sys.executable) if program == "horovodrun" else program) is None:
            raise UserError(f"{program} not found on PATH: {fixes.get(program, fixes['sbatch'])}")
    if launcher == "torchrun" and FRAMEWORKS[framework].torchrun_agent:
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
    up to `max_restarts` times, with one job id so they find their run directory and checkpoints.
    A signal to this process stops them (launch.jobs.children) and is not restarted from."""
    with children.forwarding():
        if result.command:
            return _run_launcher(result)
        return streams.exit_code(children.shell_status(_run_local(result, max_restarts)), checkpointed=False)


def _run_launcher(result: Plan) -> int:
    """torchrun's, mpirun's or horovodrun's exit code, its output pumped (launch.jobs.streams)."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "bufsize": 1}
    proc = children.popen(result.command, env={**os.environ, **result.env}, **pipes)
    rank_line, held_in = result.own_lines
    output = streams.LauncherOutput(proc, rank_line, Path(held_in))
    code = children.wait(proc)
    output.join()
    return streams.exit_code(code, output.checkpointed)


def _run_local(result: Plan, max_restarts: int) -> int:
    job = {"MNIST_DIST_JOB_ID": uuid.uuid4().hex[:12]}
    for attempt in range(max_restarts + 1):
        extra = {**job, "MNIST_DIST_RESTART_COUNT": str(attempt)}
        procs = [
            children.popen(
                cmd,
                env={**os.environ, **env, **extra},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            for cmd, env in result.per_rank
        ]
        pumps = [threading.Thread(target=_pump, args=(p, w.rank), daemon=True) for p, w in zip(procs, result.worlds)]
        for t in pumps:
            t.start()
        code = _wait_fail_fast(procs, [w.rank for w in result.worlds])
        for proc in procs:
            children.settle(proc)
        for t in pumps:
            t.join(timeout=10)
        if code == 0 or attempt == max_restarts or children.stopped_by():
            return code
        log.get().info(f"restarting every rank from the latest checkpoint ({attempt + 1} of {max_restarts})")
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
    codes = []
    while running:
        pid, status = os.wait()
        proc = running.pop(pid, None)
        if proc is None:
            continue  # some other child of ours
        proc.returncode = os.waitstatus_to_exitcode(status)
        codes.append(proc.returncode)
        if proc.returncode in (0, PREEMPTED) or children.stopped_by():
            continue  # a requested stop: every rank checkpoints the same step and leaves with its code
        others = "; stopping the other ranks" if running else ""
        log.get().info(f"rank {rank_of[pid]} (pid {pid}) {_how_it_ended(proc.returncode)}{others}")
        _stop(running.values())
        return proc.returncode
    return next((code for code in codes if code), 0)


def _how_it_ended(code: int) -> str:
    if code == -rendezvous.WATCHDOG_SIGNAL:
        return "was ended by its rendezvous deadline (its line above says why)"
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _stop(procs) -> None:
    for other in procs:
        other.terminate()
    for other in procs:
        try:
            other.wait(timeout=30)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait()
