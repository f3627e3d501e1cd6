"""A real, private, one-node Slurm cluster for tests: munged + slurmctld + slurmd from Debian.

Everything lives in one folder with private ports; `stop()` cancels every job, waits for the queue
to drain (scontrol shutdown would orphan running steps), shuts the daemons down and ends each
process it started, by pid. See ../shared/slurm-local.md for why each setting is there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "mungekey", "sbatch", "scontrol", "squeue", "sinfo", "scancel")


def binaries_present() -> bool:
    from shutil import which

    return all(which(name) or Path(f"/usr/sbin/{name}").exists() for name in DAEMONS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exe(name: str) -> str:
    from shutil import which

    return which(name) or f"/usr/sbin/{name}"


def _wait_for(check, timeout: float, what: str, poll: float = 0.1):
    """Poll `check` until it returns something truthy; a timeout is an error naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class LocalSlurm:
    """One node on this machine by default. With a testbed (launch/testbed/hosts.py), one slurmd per host
    namespace (NodeAddr = its address) and slurmctld on the bridge's address."""

    def __init__(self, root: Path, cpus: int = 4, testbed=None, task_plugin: str = "task/none", first_job: int = 1):
        # first_job: jobs derive their rendezvous ports from their ids (launch.cluster.world.port_for_job), so
        # clusters that run at once on one machine number their jobs apart
        self.root, self.task_plugin, self.first_job = root, task_plugin, first_job
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.cpus = cpus
        self.testbed = testbed
        if testbed:
            self.nodes = [(h.name, h.address) for h in testbed.hosts]
            self.ctld_address = testbed.bridge_address
        else:
            self.nodes, self.ctld_address = [(self.host, "127.0.0.1")], "127.0.0.1"
        self.pids: dict[str, int] = {}

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_exe(args[0]), *args[1:]], env=self.env, capture_output=True, text=True, timeout=timeout, check=check
        )

    def start(self) -> LocalSlurm:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o711)
        os.chmod(r / "munge", 0o711)  # munged refuses a socket folder others cannot traverse
        key, sock = r / "munge" / "munge.key", r / "munge" / "munge.sock"
        subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o400)
        subprocess.run(
            [
                _exe("munged"),
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={r / 'munge/munged.pid'}",
                f"--log-file={r / 'log/munged.log'}",
                f"--seed-file={r / 'munge/munged.seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.pids["munged"] = self._read_pid(r / "munge/munged.pid")
        self._write_conf(sock)
        self._start_daemons()
        return self

    def _write_conf(self, sock: Path) -> None:
        r = self.root
        ctld_port, d_port = _free_port(), _free_port()
        node_lines = "\n".join(
            f"NodeName={name} NodeAddr={addr} CPUs={self.cpus} RealMemory=8000 State=UNKNOWN"
            for name, addr in self.nodes
        )
        names = ",".join(name for name, _ in self.nodes)
        # A requeued batch job may start again cred_expire + 1 s after its requeue (Slurm's default is
        # 120 s), and only a scheduler pass starts it: every second here (sched_interval), not every 60 s.
        self.conf.write_text(f"""\
ClusterName=mnistdist
SlurmctldHost={self.host}({self.ctld_address})
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock},cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool/%n"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd-%n.pid"}
SlurmctldLogFile={r / "log/slurmctld.log"}
SlurmdLogFile={r / "log/slurmd-%n.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin={self.task_plugin}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r / "log/jobcomp.txt"}
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0,sched_interval=1
EnforcePartLimits=ALL
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
FirstJobId={self.first_job}
{node_lines}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")

    def _start_daemons(self) -> None:
        r = self.root
        subprocess.run(
            [_exe("slurmctld"), "-c", "-f", str(self.conf)], env=self.env, check=True, capture_output=True, timeout=30
        )
        self.pids["slurmctld"] = _wait_for(lambda: self._read_pid(r / "slurmctld.pid"), 30, "slurmctld's pid file")
        for name, _ in self.nodes:
            slurmd = [_exe("slurmd"), "-N", name, "-f", str(self.conf)]
            # on a testbed host: its network namespace, hostname and hosts file
            subprocess.run(
                self.testbed.command(name, slurmd) if self.testbed else slurmd,
                env=self.env,
                check=True,
                capture_output=True,
                timeout=30,
            )
            pid_file = r / f"slurmd-{name}.pid"
            self.pids[f"slurmd {name}"] = _wait_for(
                lambda f=pid_file: self._read_pid(f), 30, f"slurmd's pid file on {name}"
            )
        _wait_for(
            lambda: self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split() == ["idle"] * len(self.nodes),
            60,
            "every node to become idle",
        )

    def stop(self) -> None:
        """Cancel every job, wait for an empty queue, shut down, and end every process we started."""
        try:
            self.run("scancel", "--full", "-u", os.environ.get("USER", "root"), check=False, timeout=30)
            _wait_for(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 60, "an empty queue", 0.2)
            self.run("scontrol", "shutdown", check=False, timeout=30)
        except (subprocess.SubprocessError, TimeoutError, OSError):
            pass  # the daemons are ended by pid below either way
        for name in [f"slurmd {n}" for n, _ in self.nodes] + ["slurmctld", "munged"]:
            pid = self.pids.get(name)
            if pid and not self._wait_gone(pid, 0 if name == "munged" else 5):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            if pid and not self._wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a child of ours that exited stays a zombie until reaped: treat it as gone
            try:
                return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
            except OSError:
                return True

        try:
            return _wait_for(gone, timeout, f"pid {pid} to end", 0.1)
        except TimeoutError:
            return False
