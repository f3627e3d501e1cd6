"""The run directory: where a run's TensorBoard events, resolved config, checkpoints and summary go.

Only the chief (rank 0) creates or writes it, holding a lock for the run's life (launch.outputs.runlock).
Its name must be the same on every rank (they all read checkpoints from it), so a default name
uses the launcher's job id, stable across restarts and requeues, or else a time stamp (and a
suffix when the second is taken) that rank 0 passes to the others.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from launch.atomic_files import own_folder, write_json
from launch.cluster.world import World
from launch.config import Config, write_config
from launch.errors import UserError
from launch.outputs import checkpoints
from launch.outputs.fingerprint import new_run_id
from launch.outputs.runlock import RunLock

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.json"  # per-epoch train/eval loss and accuracy, with wall time
RUN_FILE = "run.json"  # the run's identity: id and fingerprint (launch.outputs.fingerprint)


def default_name(config: Config, framework: str, *rest: str) -> str:
    """A run's name when log.run_name is not set: framework-model-dataset, then `rest`: the w<N> part
    (w4-8 for an elastic Slurm job) and the job id or time stamp (either may be a glob pattern)."""
    return "-".join([framework, config.model.name, config.data.dataset, *rest])


def run_dir_for(config: Config, framework: str, world: World, stamp: str, suffix: int = 0) -> Path:
    """Where this run writes: log.dir/log.run_name, or a name from what the run is and its job id.
    A job that resumes on another number of workers continues the run its job id started. A time
    stamp taken twice in one second gets a suffix (-2, -3, ...) from `claim`."""
    if config.log.run_name:
        return Path(config.log.dir) / config.log.run_name
    here = Path(config.log.dir) / default_name(config, framework, f"w{world.size}", world.job_id or stamp)
    if config.checkpoint.resume and world.job_id and not here.exists():
        earlier = Path(config.log.dir).glob(default_name(config, framework, "w*", world.job_id))
        yours = [path for path in earlier if _yours(path)]  # in a shared log.dir, anyone can make one
        return max(yours, key=lambda path: path.stat().st_mtime, default=here)
    return here.with_name(f"{here.name}-{suffix + 1}") if suffix else here


def _yours(path: Path) -> bool:
    return not path.is_symlink() and path.stat().st_uid == os.geteuid()


@dataclass
class Claim:
    """The chief's hold on its run directory, made before anything is written."""

    run_dir: Path
    suffix: int  # for run_dir_for on the other ranks
    run_id: int  # run.json's, or a new one for a new run
    finished: bool  # the directory holds the run's complete results
    lock: RunLock


def claim(config: Config, framework: str, world: World, stamp: str, checkpoint_dir: str | None) -> Claim:
    """Chief: lock this run's directory and check that starting it here is what the config asks
    for; a default name stamped in a second another run took gets the next free suffix."""
    unique = not config.log.run_name and not world.job_id
    for suffix in range(1000 if unique else 1):
        run_dir, lock = _locked(run_dir_for(config, framework, world, stamp, suffix), unique)
        if lock is not None:
            break
    else:
        raise UserError(f"no free run name after {run_dir}: set log.run_name")
    try:
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints"
        finished = _check_start(config, run_dir, ckpt_dir)
        known = run_id_of(run_dir)
        return Claim(run_dir, suffix, known if known is not None else new_run_id(), finished, lock)
    except BaseException:
        lock.release()
        raise


def _locked(run_dir: Path, unique: bool) -> tuple[Path, RunLock | None]:
    """The run directory with its lock held, or no lock: a unique name must also be unused."""
    lock = RunLock(run_dir)
    if not unique:
        lock.acquire()
        return run_dir, lock
    if run_dir.exists() or lock.try_acquire() is not None:
        return run_dir, None
    if run_dir.exists():  # made between the look and the lock
        lock.release()
        return run_dir, None
    return run_dir, lock


def _check_start(config: Config, run_dir: Path, ckpt_dir: Path) -> bool:
    """Whether the run directory holds the finished run; refuses a start that would overwrite or
    mix with what is there, unless log.overwrite=true asks to replace it."""
    finished = (run_dir / SUMMARY_FILE).exists()
    if config.checkpoint.resume:
        if finished:
            check_results(run_dir)
        return finished
    if finished or (run_dir / CONFIG_FILE).exists():  # every run writes its config first
        if not config.log.overwrite:
            what = "a finished run" if finished else "an unfinished run"
            raise UserError(
                f"{run_dir} already holds {what}: continue it with checkpoint.resume=true, replace it with "
                "log.overwrite=true, or choose another log.run_name"
            )
        _remove(config, run_dir)  # old events and checkpoints would mix with the new run's
    found = checkpoints.any_in(ckpt_dir)
    if found:
        raise UserError(
            f"checkpoint.dir {ckpt_dir} holds another run's checkpoints ({found.name}): a new run needs an "
            "empty one (or continue that run with checkpoint.resume=true and its log.run_name)"
        )
    return False


def check_results(run_dir: Path) -> None:
    """Refuse a finished run's directory whose summary or model is missing or cut short."""
    try:
        size = json.loads((run_dir / SUMMARY_FILE).read_text())["model_size_bytes"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"{run_dir / SUMMARY_FILE} is unreadable ({exc}): replace the run with log.overwrite=true"
        ) from None
    models = [path for path in run_dir.glob("model.*") if path.stat().st_size == size]
    if not models:
        raise UserError(
            f"{run_dir} has a summary.json but no complete model file (model.*, {size} bytes): the run "
            "died while writing its results; replace it with log.overwrite=true"
        )


def _remove(config: Config, run_dir: Path) -> None:
    log_dir, target = Path(config.log.dir).resolve(), run_dir.resolve()
    if target.parent != log_dir:  # run names are one folder (launch.config): never anything else
        raise UserError(f"{run_dir} is not a run directory inside log.dir {log_dir}: not removing it")
    shutil.rmtree(target)


def run_id_of(run_dir: Path) -> int | None:
    """The id in the run directory's run.json, or None when it has none."""
    try:
        return int(json.loads((run_dir / RUN_FILE).read_text())["id"], 16)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"{run_dir / RUN_FILE} is unreadable ({exc}): replace the run with log.overwrite=true"
        ) from None


def create_run_dir(config: Config, run_dir: Path, identity: dict) -> None:
    """Create the run directory, write the resolved config, and the run's identity when it is new
    (chief only, holding the claim)."""
    own_folder(run_dir)
    write_config(config, run_dir / CONFIG_FILE)
    if not (run_dir / RUN_FILE).exists():
        write_json(run_dir / RUN_FILE, identity)
