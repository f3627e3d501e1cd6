"""`mnist-dist doctor`: its ranks run in two parts under the launcher `run` would use, torch's
(torch_dist.doctor: facts, links, gloo and NCCL) then TensorFlow's (tf_dist.doctor: its collective),
where TensorFlow is installed; rank 0's reports are merged into doctor.json and doctor.md, printed,
and the exit code says whether there was a finding. Under Slurm each part is a short job.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from launch import log
from launch.atomic_files import write_json, write_text
from launch.clock import stamp
from launch.doctor.findings import REPORT, TF_REPORT, render
from launch.errors import UserError
from launch.jobs import launchers, slurm
from launch.jobs.jobspec import JobSpec


def parts(spec: JobSpec) -> list[JobSpec]:
    """The jobs the doctor runs, in order."""
    torch_part = dataclasses.replace(spec, framework="torch", program="torch_dist.doctor")
    if importlib.util.find_spec("tensorflow") is None:
        return [torch_part]
    return [torch_part, dataclasses.replace(spec, framework="tf", program="tf_dist.doctor")]


def run(spec: JobSpec, name: str) -> int:
    """Every part on this node (or as Slurm jobs); node rank 0 then reports. The exit code: the
    first failed part's, else 1 with a finding, else 0."""
    jobs = parts(spec)
    if len(jobs) == 1:
        log.get().info("TensorFlow is not installed here: its collective is not measured")
    if spec.launcher == "slurm":
        folders = _slurm_jobs(jobs)
    else:
        for job in jobs:
            launchers.preflight(job.launcher, job.framework)
            code = launchers.run_plan(launchers.plan(job), 0)
            if code:
                return code
        if spec.node_rank:
            return 0  # node rank 0 holds rank 0's reports
        folders = [Path(spec.log_dir) / name] * len(jobs)
    report = _merged(folders)
    print(render(report), end="")
    if report["findings"]:
        log.get().error(f"doctor: {len(report['findings'])} finding(s); {folders[0] / REPORT}")
        return 1
    return 0


def _merged(folders: list[Path]) -> dict:
    """torch's report with TensorFlow's sweep added, written back as doctor.json and doctor.md."""
    report = json.loads((folders[0] / REPORT).read_text())
    if len(folders) > 1:
        tf_part = json.loads((folders[1] / TF_REPORT).read_text())
        report["allreduce"][f"tensorflow ({tf_part['strategy']})"] = tf_part["rows"]
        write_json(folders[0] / REPORT, report)
        write_text(folders[0] / "doctor.md", render(report))
    return report


def _slurm_jobs(jobs: list[JobSpec]) -> list[Path]:
    """Each part as one short job, one after another; their folders (log.dir/doctor-<first job>[-<job>])."""
    folders: list[Path] = []
    for job in jobs:
        prefix = folders[0].name if folders else "doctor"
        folders.append(Path(job.log_dir) / f"{prefix}-{_submit(job, prefix)}")
    return folders


def _submit(job: JobSpec, prefix: str) -> str:
    launchers.preflight("slurm", job.framework)
    kept_as = Path(job.log_dir) / "slurm" / f"{prefix}-{job.framework}-{stamp()}.sbatch"
    number = slurm.submit(slurm.render(job, prefix, Path(job.log_dir)), kept_as)
    print(f"submitted job {number} ({job.module})\n  log: {job.slurm.output.replace('%j', number)}", flush=True)
    info = slurm.wait(number)
    if slurm.exit_code(info):
        raise UserError(
            f"doctor job {number} ({job.module}) {info.get('JobState')} with exit code {info.get('ExitCode')}: "
            "its log says why"
        )
    return number
