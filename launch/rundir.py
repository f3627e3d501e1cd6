"""The run directory: where a run's TensorBoard events, resolved config, checkpoints and summary go.

Only the chief (rank 0) creates or writes it. Its name must be the same on every rank (they all read
checkpoints from it), so a default name uses the launcher's job id, stable across restarts and
requeues, or else a time stamp the trainer takes from rank 0.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from launch.config import Config, write_config
from launch.errors import UserError
from launch.world import World

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.json"  # per-epoch train/eval loss and accuracy, with wall time


def run_dir_for(config: Config, framework: str, world: World, stamp: str) -> Path:
    """Where this run writes: log.dir/log.run_name, or a name from what the run is and its job id.
    A job that resumes on another number of workers continues the run its job id started."""
    if config.log.run_name:
        return Path(config.log.dir) / config.log.run_name
    what = [framework, config.model.name, config.data.dataset]
    here = Path(config.log.dir) / "-".join([*what, f"w{world.size}", world.job_id or stamp])
    if config.checkpoint.resume and world.job_id and not here.exists():
        earlier = Path(config.log.dir).glob("-".join([*what, "w*", world.job_id]))
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


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
