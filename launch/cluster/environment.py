"""What decides a run's speed and correctness besides its config, for summary.json's `environment`:
the launch environment's variables, the CPU model and the MPI and Slurm versions. `mnist-dist diff`
holds two runs' records side by side.

Variables are kept by the prefixes that launchers and communication libraries read (NCCL_*,
GLOO_*, TensorFlow's TF_*, OMPI_MCA_*, SLURM_*, MASTER_*, ...), less the user's identity (Slurm's
job user, uid, account and submit folder). summary.json is often shared, so a name that says it
holds a secret keeps its name and loses its value, and a value loses the password of a
user:password@ and the values of a query string.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

PREFIXES = (
    *("NCCL_", "TORCH_NCCL_", "GLOO_", "OMPI_MCA_", "PMIX_MCA_", "SLURM_", "MASTER_"),
    *("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HOROVOD_", "TORCHELASTIC_"),
    # TensorFlow's own TF_ variables: Terraform's (TF_VAR_*, TF_TOKEN_*, TF_LOG, ...) share the prefix
    *("TF_CONFIG", "TF_CPP_", "TF_GPU_", "TF_XLA_", "TF_CUDNN_", "TF_ENABLE_", "TF_NUM_", "TF_FORCE_"),
    *("TF_DETERMINISTIC_OPS", "TF_USE_LEGACY_KERAS", "TF_CUDA_", "TF_COLLECTIVE_"),
)
IDENTITY = {"SLURM_JOB_USER", "SLURM_JOB_UID", "SLURM_JOB_GID", "SLURM_JOB_ACCOUNT", "SLURM_SUBMIT_DIR"}
# A secret's name: these words anywhere in it, or a short one as a whole word (NCCL_IB_PKEY is no key)
_SECRET = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|APIKEY|JWT|(^|_)(KEY|PASS|PWD|AUTH)(_|$)", re.I
)
_USER_INFO = re.compile(r"(^|[\s=,;]|://)[^\s/@:=,;]+:[^\s/@]+@")  # user:password@, with a scheme or without
_QUERY_VALUE = re.compile(r"([?&][^=&\s#]+=)[^&\s#]*")
REDACTED = "<redacted>"


def launch_variables(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that decide how the ranks met and talk, sorted, secrets redacted."""
    env = os.environ if env is None else env
    kept = {name: value for name, value in env.items() if name.startswith(PREFIXES) and name not in IDENTITY}
    return {name: _redacted(name, kept[name]) for name in sorted(kept)}


def _redacted(name: str, value: str) -> str:
    if _SECRET.search(name):
        return REDACTED
    value = _USER_INFO.sub(lambda m: f"{m[1]}{REDACTED}@", value)
    return _QUERY_VALUE.sub(lambda m: f"{m[1]}{REDACTED}", value)


def cpu_model() -> str:
    """The CPU's model name as the kernel lists it, else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tool_versions(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Open MPI's version where it is installed, Slurm's inside a Slurm job."""
    env = os.environ if env is None else env
    found = {}
    if shutil.which("ompi_info"):
        found["openmpi"] = _version(["ompi_info", "--version"], r"Open MPI v(\S+)")
    if "SLURM_JOB_ID" in env and shutil.which("srun"):
        found["slurm"] = _version(["srun", "--version"], r"slurm (\S+)")
    return {tool: version for tool, version in found.items() if version}


def _version(cmd: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out)
    return match[1] if match else None
