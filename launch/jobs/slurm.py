"""sbatch scripts from the templates in slurm/, job submission, and following a job to its end.

Every value that reaches a script is validated, and every value that reaches a shell command line
is quoted with shlex.quote: a hostile job name or override cannot run anything.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import subprocess
import sys
import time
from pathlib import Path

from launch.atomic_files import own_folder, write_text
from launch.cluster.world import PORT_BASE, PORT_SPAN
from launch.errors import UserError
from launch.frameworks import FRAMEWORKS
from launch.jobs.jobspec import JobSpec

TEMPLATES = ("torch", "tf", "mpi")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TIME = re.compile(r"(\d+-)?\d{1,2}(:\d{2}){0,2}|\d+")  # Slurm's [days-]hours[:minutes[:seconds]] or minutes
_TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


class _Template(string.Template):
    delimiter = "@"  # placeholders are @{name}: the scripts' own $VARIABLES stay shell's


def template_dir() -> Path:
    """slurm/ beside the package in a checkout, else where setup.py installs the templates."""
    here = Path(__file__).resolve().parents[2] / "slurm"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "mnist-dist" / "slurm"


def validate(spec: JobSpec) -> None:
    """Refuse Slurm options that sbatch would reject, or that could inject shell into the script."""
    opts = spec.slurm
    if spec.nodes < 1 or spec.nproc < 1:
        raise UserError("--nodes and --nproc must be at least 1")
    if opts.gpus_per_node < 0 or (opts.cpus_per_task is not None and opts.cpus_per_task < 1):
        raise UserError("--gpus-per-node must be >= 0 and --cpus-per-task >= 1")
    if not _TIME.fullmatch(opts.time):
        raise UserError(f"--time {opts.time!r} is not a Slurm time: use minutes, HH:MM:SS or D-HH:MM:SS")
    for name in ("partition", "account", "job_name"):
        value = getattr(opts, name)
        if value is not None and not _NAME.fullmatch(value):
            raise UserError(
                f"--{name.replace('_', '-')} {value!r} may hold only letters, digits, '.', '_' "
                "and '-' (starting with a letter or digit)"
            )
    if not opts.output or re.search(r"[\s'\"`$\\;]", opts.output):
        raise UserError(f"--output {opts.output!r} must be a path without spaces, quotes or shell characters")
    for line in opts.extra_sbatch:
        if not re.fullmatch(r"--[A-Za-z][\w-]*(=[^\s'\"`$\\;]+)?", line):
            raise UserError(
                f"extra #SBATCH option {line!r} must look like --name or --name=value (no spaces or shell characters)"
            )
    if any("\n" in line for line in opts.setup):
        raise UserError("each --setup line must be one line")
    if not re.fullmatch(r"(USR1|USR2|URG|HUP|INT|QUIT|ALRM)@\d+", opts.preempt_signal):
        raise UserError(f"--preempt-signal {opts.preempt_signal!r} must look like USR1@60 (signal@seconds)")
    if opts.mpi_launcher not in ("mpirun", "srun"):
        raise UserError("--mpi-launcher must be mpirun or srun")


def sbatch_lines(spec: JobSpec) -> list[str]:
    opts, torch_template = spec.slurm, spec.template == "torch"
    per_node_tasks = 1 if torch_template else spec.nproc  # torch: one torchrun agent per node
    # --cpus-per-task is per worker in every template: a torchrun agent's task holds its workers' CPUs
    cpus = (opts.cpus_per_task or 1) * (spec.nproc if torch_template else 1)
    if spec.elastic:
        # --ntasks-per-node would make Slurm count the tasks for the smallest size and give it that
        # many nodes; without it, a job gets one task (here: one torchrun agent) per node it gets.
        tasks = [f"--nodes={spec.lowest_nodes}-{spec.nodes}"]
    else:
        tasks = [f"--nodes={spec.nodes}", f"--ntasks-per-node={per_node_tasks}"]
    lines = [
        f"--job-name={opts.job_name}",
        *tasks,
        f"--cpus-per-task={cpus}",
        f"--time={opts.time}",
        f"--output={opts.output}",
        "--requeue",
        f"--signal=B:{opts.preempt_signal}",
        "--open-mode=append",
    ]  # a requeue keeps the log
    if opts.gpus_per_node:
        lines.append(f"--gpus-per-node={opts.gpus_per_node}")
    lines += [f"--{name}={value}" for name in ("partition", "account") if (value := getattr(opts, name))]
    return ["#SBATCH " + line for line in lines + list(opts.extra_sbatch)]


def render(spec: JobSpec, run_prefix: str, log_dir: Path) -> str:
    """The sbatch script for the spec's framework from slurm/<template>.sbatch."""
    template, module = spec.template, spec.module
    if template not in TEMPLATES:
        raise UserError(f"unknown Slurm template {template!r}: use one of {', '.join(TEMPLATES)}")
    if template in FRAMEWORKS and template != spec.framework:
        raise UserError(
            f"the {template} template runs {FRAMEWORKS[template].module}; use --framework {template} "
            "or the mpi template"
        )
    validate(spec)
    if not _NAME.fullmatch(run_prefix):
        raise UserError(f"run name {run_prefix!r} may hold only letters, digits, '.', '_' and '-'")
    opts = spec.slurm
    # Each rank gets its --cpus-per-task CPUs: srun is told again (the templates' srun too: since
    # Slurm 22.05 it does not inherit them from sbatch), and mpirun, which binds a rank to one core
    # by default, maps SLURM_CPUS_PER_TASK hardware threads (Slurm's CPUs) to each.
    mpi_command = (
        'srun --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" --mpi=pmix'
        if opts.mpi_launcher == "srun"
        else 'mpirun -np "$SLURM_NTASKS" --use-hwthread-cpus --map-by slot:PE="$SLURM_CPUS_PER_TASK"'
        + (" --allow-run-as-root" if os.geteuid() == 0 else "")
    )
    preemption = _Template((template_dir() / "preemption.sh").read_text()).substitute(
        signal=opts.preempt_signal.split("@")[0], run_dir=shlex.quote(str(Path(log_dir) / run_prefix))
    )
    return _Template((template_dir() / f"{template}.sbatch").read_text()).substitute(
        preemption=preemption.rstrip("\n"),
        sbatch_lines="\n".join(sbatch_lines(spec)),
        setup_lines="\n".join(opts.setup),
        python=shlex.quote(spec.python),
        nproc=spec.nproc,
        module=module,
        mpi_launcher=opts.mpi_launcher,
        mpi_command=mpi_command,
        train_args=" ".join(shlex.quote(arg) for arg in spec.train_args()),
        run_prefix=shlex.quote(run_prefix),
        port_base=PORT_BASE,  # the port launch.cluster.world derives from a job id
        port_span=PORT_SPAN,
    )


def submit(script: str, kept_as: Path) -> str:
    """sbatch the script on its standard input, after keeping a copy at `kept_as`; return the job id.
    sbatch never reads the copy: in a shared log.dir another user could swap it before sbatch did."""
    own_folder(kept_as.parent)
    write_text(kept_as, script)
    out = _slurm("sbatch", "--parsable", stdin=script)
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


def _slurm(*cmd: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(
            f"{cmd[0]} not found: run this on a Slurm login node, or install Slurm's client "
            "tools (Debian: slurm-client)"
        ) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{' '.join(cmd[:2])} failed: {last}")
    return result.stdout
