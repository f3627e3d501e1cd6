"""Which run this start belongs to, and where it continues from.

Rank 0 claims the run directory (launch.outputs.rundir) and every rank learns from it the run's
directory, id and whether it had finished. A resume then continues from the run's latest checkpoint
(launch.outputs.checkpoints), at this world size, and only from a checkpoint of this run trained with
the settings that define it (launch.outputs.fingerprint).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from launch import log
from launch.clock import stamp
from launch.cluster.world import World
from launch.config import Config
from launch.errors import UserError
from launch.outputs import checkpoints, fingerprint, rundir
from launch.run.comm import gather
from launch.run.engine import Engine
from launch.run.progress import Progress


@dataclass(frozen=True)
class RunIdentity:
    dir: Path
    id: str
    fingerprint: dict  # launch.outputs.fingerprint.fingerprint
    finished: bool  # the run directory held the run's complete results when this start claimed it
    started: float  # time.time() of this start, agreed by every rank

    def to_dict(self) -> dict:
        """Whose a checkpoint is."""
        return {"id": self.id, "dir": str(self.dir), "fingerprint": self.fingerprint}


@dataclass
class Resumed:
    progress: Progress = field(default_factory=Progress)
    finished: bool = False  # the run had already finished: nothing is left to train


def agree_on_run(config: Config, world: World, engine: Engine) -> tuple[RunIdentity, rundir.Claim | None]:
    """Every rank's view of the run rank 0 claimed, and rank 0's claim (None elsewhere). A refusal
    on rank 0 ends every rank: rank 0 with its line, the others with its exit code."""
    started, refusal, claim = time.time(), None, None
    if world.is_chief:
        try:
            claim = rundir.claim(config, engine.framework, world, stamp(started), config.checkpoint.dir)
        except UserError as exc:
            refusal = exc
    mine = {"started": started, "suffix": 0, "run_id": 0, "finished": 0, "refused": 0}
    if claim:
        mine.update(suffix=claim.suffix, run_id=claim.run_id, finished=claim.finished)
    elif refusal:
        mine["refused"] = refusal.exit_code
    chief = gather(engine.comm, mine).of_rank(0)
    if refusal:
        raise refusal
    if chief["refused"]:
        raise SystemExit(int(chief["refused"]))  # rank 0's line says why
    run = RunIdentity(
        dir=rundir.run_dir_for(config, engine.framework, world, stamp(chief["started"]), int(chief["suffix"])),
        id=fingerprint.id_text(int(chief["run_id"])),
        fingerprint=fingerprint.fingerprint(config, engine.data_info["sha256"]),
        finished=bool(chief["finished"]),
        started=float(chief["started"]),
    )
    return run, claim


def resume(config: Config, world: World, engine: Engine, run: RunIdentity, ckpt_dir: Path) -> Resumed:
    """Continue from the latest checkpoint that reads, at this world size (the engine restores its
    state), or from scratch where there is none; or nothing, where the run had finished."""
    checkpoints.refuse_other_frameworks(ckpt_dir, engine.framework)
    restored = _restore_newest(config, world, engine, ckpt_dir)
    if restored is None and run.finished:
        _say_finished(world, run, "its summary.json is there, and no checkpoint to train further from")
        return Resumed(finished=True)
    if restored is None:
        if world.is_chief:
            log.get().info(f"no checkpoint in {ckpt_dir}; starting from scratch")
        return Resumed()
    path, state = restored
    _check_identity(path, state, run)
    progress = Progress.from_dict(state)
    max_steps = config.train.max_steps
    if max_steps is not None and progress.step > max_steps:
        raise UserError(
            f"{path} is at step {progress.step}, past train.max_steps={max_steps}: raise train.max_steps "
            "to train further, or start a new run (another log.run_name) to train fewer steps"
        )
    if progress.done(config.train) and not run.finished:
        raise UserError(
            f"{path} is the run's last step, but {run.dir} has no summary.json: the run died while "
            "writing its results; train it again with log.overwrite=true and an empty checkpoint.dir"
        )
    if progress.done(config.train):
        limit = "train.epochs" if progress.epoch >= config.train.epochs else "train.max_steps"
        detail = f"{progress.epoch} of {config.train.epochs} epochs, step {progress.step}; {path.name}"
        _say_finished(world, run, f"{detail}; raise {limit} to train it further")
        return Resumed(progress, finished=True)
    if world.is_chief:
        _say_resuming(config, world, path, progress, engine.n_train)
    return Resumed(progress)


def _restore_newest(config: Config, world: World, engine: Engine, ckpt_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that reads, restored, and its state; a damaged one (cut short by a full
    disk or a killed copy) is passed over for the one before, and said so. None: there is none."""
    candidates = checkpoints.newest_first(ckpt_dir, engine.framework)
    for i, path in enumerate(candidates):
        try:
            return path, engine.restore_checkpoint(path, config.scaled_lr(world.size))
        except checkpoints.DamagedCheckpoint as exc:
            if i == len(candidates) - 1:
                raise
            if world.is_chief:
                log.get().warning(f"{exc}; resuming from the checkpoint before it, {candidates[i + 1].name}")
    return None


def _check_identity(path: Path, state: dict, run: RunIdentity) -> None:
    """Refuse a checkpoint of another run, or of this run under settings that define another training."""
    theirs = state.get("run")
    if "sample" not in state or theirs is None:  # the engines pass the progress on as the loop saved it
        raise UserError(
            f"{path}: written by an older mnist-dist, without the run identity it needs to resume; "
            "start a new run (another log.run_name)"
        )
    if theirs["id"] != run.id:
        raise UserError(
            f"{path} belongs to another run ({theirs['dir']}, id {theirs['id']}), not to {run.dir}: point "
            "checkpoint.dir at this run's checkpoints, or continue that run with its log.run_name"
        )
    changed = fingerprint.differences(theirs["fingerprint"], run.fingerprint)
    if changed:
        raise UserError(
            f"{path} was trained with other settings ({'; '.join(changed)}): resume with the "
            "checkpoint's, or start a new run (another log.run_name)"
        )


def _say_finished(world: World, run: RunIdentity, detail: str) -> None:
    if world.is_chief:
        log.get().info(f"{run.dir} already finished ({detail}): nothing to do, its results stay as they are")


def _say_resuming(config: Config, world: World, path: Path, progress: Progress, n_train: int) -> None:
    before = progress.world_sizes[-1]["world_size"]
    where = (  # epochs counted from 1, as the epoch lines count them
        f"in epoch {progress.epoch + 1}, step {progress.step}, sample {progress.sample} of {n_train}"
        if progress.sample
        else f"after epoch {progress.epoch}, step {progress.step}"
    )
    log.get().info(
        f"resuming from {path} ({where}) on {world.size} worker(s)"
        + (f", not {before}" if before != world.size else "")
    )
    if config.dist.compression == "powersgd":
        log.get().info(
            "PowerSGD's error feedback is not in checkpoints: it restarts from zero, after "
            f"dist.powersgd_start={config.dist.powersgd_start} plain steps"
        )
