"""The run directory: where a run's TensorBoard events, resolved config, checkpoints and summary go.

Only the chief (rank 0) creates or writes it. Its name must be the same on every rank (they all read
checkpoints from it), so a default name uses the launcher's job id, stable across restarts and
requeues, or else a time stamp the trainer takes from rank 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from launch.config import Config, write_config
from launch.errors import UserError
from launch.world import World

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.json"  # per-epoch train/eval loss and accuracy, with wall time


def default_name(config: Config, framework: str, *rest: str) -> str:
    """A run's name when log.run_name is not set: framework-model-dataset, then `rest`: the w<N> part
    (w4-8 for an elastic Slurm job) and the job id or time stamp (either may be a glob pattern)."""
    return "-".join([framework, config.model.name, config.data.dataset, *rest])


def run_dir_for(config: Config, framework: str, world: World, stamp: str) -> Path:
    """Where this run writes: log.dir/log.run_name, or a name from what the run is and its job id.
    A job that resumes on another number of workers continues the run its job id started."""
    if config.log.run_name:
        return Path(config.log.dir) / config.log.run_name
    here = Path(config.log.dir) / default_name(config, framework, f"w{world.size}", world.job_id or stamp)
    if config.checkpoint.resume and world.job_id and not here.exists():
        earlier = Path(config.log.dir).glob(default_name(config, framework, "w*", world.job_id))
        return max(earlier, key=lambda path: path.stat().st_mtime, default=here)
    return here


def create_run_dir(config: Config, run_dir: Path) -> None:
    """Create the run directory and write the resolved config (chief only).

    A directory that already holds a finished run is refused unless the run resumes it, so that a
    repeated command never overwrites results.
    """
    if (run_dir / SUMMARY_FILE).exists() and not config.checkpoint.resume:
        if not config.log.overwrite:
            raise UserError(
                f"{run_dir} already holds a finished run: choose another log.run_name, continue it "
                "with checkpoint.resume=true, or replace it with log.overwrite=true"
            )
        shutil.rmtree(run_dir)  # asked for: old events and checkpoints would mix with the new run's
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(config, run_dir / CONFIG_FILE)
