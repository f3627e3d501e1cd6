"""sbatch scripts from the templates in slurm/, job submission, and following a job to its end.

Every value that reaches a script is validated, and every value that reaches a shell command line
is quoted with shlex.quote: a hostile job name or override cannot run anything.
"""

from __future__ import annotations

import re
import shlex
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from launch.errors import UserError

TEMPLATES = ("torch", "tf", "mpi")
MODULES = {"torch": "torch_dist.train", "tf": "tf_dist.train"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TIME = re.compile(r"(\d+-)?\d{1,2}(:\d{2}){0,2}|\d+")  # Slurm's [days-]hours[:minutes[:seconds]] or minutes
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE"}


class _Template(string.Template):
    delimiter = "@"  # placeholders are @{name}: the scripts' own $VARIABLES stay shell's


def template_dir() -> Path:
    """slurm/ beside the package in a checkout, else where setup.py installs the templates."""
    here = Path(__file__).resolve().parent.parent / "slurm"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "mnist-dist" / "slurm"


@dataclass
class SbatchOptions:
    nodes: int = 1
    min_nodes: int | None = None  # below nodes: an elastic job (sbatch --nodes=MIN-MAX)
    tasks_per_node: int = 1  # workers per node
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    job_name: str = "mnist-dist"
    output: str = "slurm-%j.out"
    extra_sbatch: list[str] = field(default_factory=list)  # e.g. "--qos=high", "--constraint=a100"
    setup: list[str] = field(default_factory=list)  # shell lines run first: module load ..., source venv
    mpi_launcher: str = "mpirun"  # mpi template: mpirun | srun (srun --mpi=pmix)
    preempt_signal: str = "USR1@60"  # Slurm's warning before preemption or the time limit: SIG@seconds

    @property
    def elastic(self) -> bool:
        return self.min_nodes is not None and self.min_nodes != self.nodes

    def validate(self, template: str) -> None:
        for name in ("nodes", "tasks_per_node"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.elastic and template != "torch":
            raise UserError(f"a node range ({self.min_nodes}:{self.nodes}) needs the torch template (one torchrun "
                            f"agent per node); the {template} template takes a fixed --nodes, and a requeued job "
                            "gets as many again")
        if self.gpus_per_node < 0 or (self.cpus_per_task is not None and self.cpus_per_task < 1):
            raise UserError("--gpus-per-node must be >= 0 and --cpus-per-task >= 1")
        if not _TIME.fullmatch(self.time):
            raise UserError(f"--time {self.time!r} is not a Slurm time: use minutes, HH:MM:SS or D-HH:MM:SS")
        for name in ("partition", "account", "job_name"):
            value = getattr(self, name)
            if value is not None and not _NAME.fullmatch(value):
                raise UserError(f"--{name.replace('_', '-')} {value!r} may hold only letters, digits, '.', '_' "
                                "and '-' (starting with a letter or digit)")
        if not self.output or re.search(r"[\s'\"`$\\;]", self.output):
            raise UserError(f"--output {self.output!r} must be a path without spaces, quotes or shell characters")
        for line in self.extra_sbatch:
            if not re.fullmatch(r"--[A-Za-z][\w-]*(=[^\s'\"`$\\;]+)?", line):
                raise UserError(f"extra #SBATCH option {line!r} must look like --name or --name=value "
                                "(no spaces or shell characters)")
        for line in self.setup:
            if "\n" in line:
                raise UserError("each --setup line must be one line")
        if not re.fullmatch(r"(USR1|USR2|URG|HUP|INT|QUIT|ALRM)@\d+", self.preempt_signal):
            raise UserError(f"--preempt-signal {self.preempt_signal!r} must look like USR1@60 (signal@seconds)")
        if self.mpi_launcher not in ("mpirun", "srun"):
            raise UserError("--mpi-launcher must be mpirun or srun")

    def sbatch_lines(self, template: str) -> list[str]:
        per_node_tasks = 1 if template == "torch" else self.tasks_per_node  # torch: one torchrun agent per node
        cpus = self.cpus_per_task or (self.tasks_per_node if template == "torch" else 1)
        if self.elastic:
            # --ntasks-per-node would make Slurm count the tasks for the smallest size and give it that
            # many nodes; without it, a job gets one task (here: one torchrun agent) per node it gets.
            tasks = [f"--nodes={self.min_nodes}-{self.nodes}"]
        else:
            tasks = [f"--nodes={self.nodes}", f"--ntasks-per-node={per_node_tasks}"]
        lines = [f"--job-name={self.job_name}", *tasks, f"--cpus-per-task={cpus}", f"--time={self.time}", f"--output={self.output}",
                 "--requeue", f"--signal=B:{self.preempt_signal}", "--open-mode=append"]  # a requeue keeps the log
        if self.gpus_per_node:
            lines.append(f"--gpus-per-node={self.gpus_per_node}")
        lines += [f"--{name}={value}" for name in ("partition", "account") if (value := getattr(self, name))]
        return ["#SBATCH " + line for line in lines + self.extra_sbatch]


def render(template: str, framework: str, options: SbatchOptions, train_args: list[str], run_prefix: str,
           log_dir: Path, python: str = sys.executable) -> str:
    """The sbatch script for `framework` from slurm/<template>.sbatch."""
    if template not in TEMPLATES:
        raise UserError(f"unknown Slurm template {template!r}: use one of {', '.join(TEMPLATES)}")
    if template in MODULES and template != framework:
        raise UserError(f"the {template} template runs {MODULES[template]}; use --framework {template} or the mpi template")
    options.validate(template)
    if not _NAME.fullmatch(run_prefix):
        raise UserError(f"run name {run_prefix!r} may hold only letters, digits, '.', '_' and '-'")
    mpi_command = ("srun --kill-on-bad-exit=1 --mpi=pmix" if options.mpi_launcher == "srun"
                   else 'mpirun -np "$SLURM_NTASKS"' + (" --allow-run-as-root" if _is_root() else ""))
    text = (template_dir() / f"{template}.sbatch").read_text()
    preemption = _Template((template_dir() / "preemption.sh").read_text()).substitute(
        signal=options.preempt_signal.split("@")[0], run_dir=shlex.quote(str(Path(log_dir) / run_prefix)))
    return _Template(text).substitute(
        preemption=preemption.rstrip("\n"),
        sbatch_lines="\n".join(options.sbatch_lines(template)),
        setup_lines="\n".join(options.setup),
        python=shlex.quote(python),
        nproc=options.tasks_per_node,
        module=MODULES[framework],
        mpi_launcher=options.mpi_launcher,
        mpi_command=mpi_command,
        train_args=" ".join(shlex.quote(arg) for arg in train_args),
        run_prefix=shlex.quote(run_prefix),
    )


def submit(script: Path) -> str:
    """sbatch the script; return the job id."""
    out = _slurm("sbatch", "--parsable", str(script))
    return out.strip().split(";")[0]


def job_info(job_id: str) -> dict[str, str]:
    """`scontrol show job` of one job as a dict (JobState, ExitCode, StdOut, ...)."""
    out = _slurm("scontrol", "show", "job", "-o", job_id)
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def exit_code(info: dict[str, str]) -> int:
    """A finished job's exit code as a shell would report it: the code, or 128 + the signal."""
    code, _, sig = info.get("ExitCode", "0:0").partition(":")
    return int(code) or (128 + int(sig) if sig and int(sig) else 0)


def wait(job_id: str, poll: float = 0.5, timeout: float | None = None) -> dict[str, str]:
    """Follow a job until it ends; return its final scontrol record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = job_info(job_id)
        if info.get("JobState") in _TERMINAL:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise UserError(f"job {job_id} still {info.get('JobState')} after {timeout}s")
        time.sleep(poll)


def _slurm(*cmd: str) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found: run this on a Slurm login node, or install Slurm's client "
                        "tools (Debian: slurm-client)") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{' '.join(cmd[:2])} failed: {last}")
    return result.stdout


def _is_root() -> bool:
    import os

    return os.geteuid() == 0
