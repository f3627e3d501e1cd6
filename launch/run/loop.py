"""The training loop both trainers share: epochs, shards, timing, TensorBoard, evaluation,
checkpoints, records and the summary. What needs a framework is behind `Engine` (the step, its
device and its files) and `launch.run.comm.Communicator` (the collectives the loop needs), which
`torch_dist` and `tf_dist` implement; so the two trainers differ only where their frameworks differ.

Progress is counted so that a run can continue on another number of workers (launch.data.shard):
`step` counts optimizer steps across the whole run, whatever the world size was when each was
taken (the x axis of TensorBoard); `sample` counts the positions of the current epoch's permutation
already trained, by all ranks together. A checkpoint holds both, and the world-size history: which
steps ran on how many workers, at which global batch and learning rate. The learning rate always
follows train.lr_scaling for the world size that is running (the linear rule keeps lr proportional
to the global batch).

MNIST_DIST_SAMPLE_LOG=<folder> makes every rank append the training-set indices of each of its
batches to <folder>/rank<R>.jsonl: tests prove with it that no sample is lost or repeated.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from launch import log, signals
from launch.clock import process_start, stamp
from launch.cluster.rendezvous import interface_towards, resolve
from launch.cluster.world import World
from launch.config import Config
from launch.data.shard import shard_indices, shard_size, steps_per_epoch
from launch.errors import UserError
from launch.files import write_json
from launch.outputs import checkpoints, identity, rundir
from launch.outputs.rundir import HISTORY_FILE, create_run_dir, run_dir_for
from launch.outputs.summary import peak_rss_bytes, write_summary
from launch.outputs.tensorboard import ScalarWriter
from launch.run.comm import Communicator, Rows, gather, gather_text
from launch.run.metrics import EVAL_ACCURACY, EVAL_LOSS, IMAGES_PER_SEC, TRAIN_LOSS, ThroughputMeter, interval_scalars
from launch.run.records import (
    FINAL_ROW,
    EpochRecord,
    RunFacts,
    history_from_dicts,
    history_to_dicts,
    make_summary,
    plot_history,
)
from launch.run.stragglers import SPLIT, StragglerWatch, split
from launch.run.worker import threads_per_worker, usable_cpus


class Engine(ABC):
    """A framework's training step, its device and its files. All ranks call every method in the same
    order, since some are collectives; `save_model` is called on the chief only."""

    framework: str  # a key of launch.frameworks.FRAMEWORKS
    batch_per_rank: int  # images one rank takes per step (train.batch_size x accumulation x local replicas)
    backend: str  # shown in summary.json: gloo, nccl, horovod, the TF strategy
    device: str  # cpu | cuda | gpu
    versions: dict  # framework versions for summary.json
    n_train: int  # training set size
    data_info: dict  # launch.data.datasets.Dataset.info(): its SHA-256 (part of the run's fingerprint), source, check
    comm: Communicator

    @abstractmethod
    def start_epoch(self, indices: np.ndarray) -> None:
        """Prepare this rank's batches from its shard (positions in the training set, in order):
        batch i is indices[i * batch_per_rank:(i + 1) * batch_per_rank]."""

    @abstractmethod
    def train_step(self, batch: int) -> int:
        """Train on batch number `batch` of the epoch; return its number of images."""

    @abstractmethod
    def take_outputs(self) -> tuple[float, float]:
        """This rank's (loss sum, correct predictions) since the last call: a host sync."""

    def take_timings(self) -> tuple[float, float]:
        """This rank's seconds in its steps since the last call: computing (forward, backward, update)
        and in the gradients' collective (waiting for the other ranks, then reducing). NaN where the
        engine cannot tell them apart: the loop then counts the steps' whole time as compute."""
        return math.nan, math.nan

    @abstractmethod
    def sync(self) -> None:
        """Wait until the device has finished the work queued so far."""

    @abstractmethod
    def evaluate(self, rank: int, size: int) -> tuple[float, float, int]:
        """This rank's part of the test set (every size-th sample from `rank`): loss sum, correct, count."""

    @abstractmethod
    def save_checkpoint(self, folder: Path, step: int, progress: dict) -> None:
        """Save model, optimizer and the loop's `progress` (JSON-able) as the checkpoint of `step` in
        `folder` (the chief writes there; under TensorFlow saving is collective)."""

    @abstractmethod
    def restore_checkpoint(self, path: Path, lr: float) -> dict:
        """Load the checkpoint file `path` on this rank and return its progress; set the learning rate
        to `lr` (the checkpoint's may be for another world size)."""

    @abstractmethod
    def save_model(self, run_dir: Path) -> Path:
        """Chief: save the trained model for use and size measurement; return the file."""


PREEMPTED = 75  # exit code of a run stopped early by a preemption signal, checkpointed to resume
STOP_FILE = "PREEMPT"  # a file of this name in the run directory asks every rank to stop and checkpoint
INTERVAL_ROW = ("images", "seconds", "steps", "loss_sum", "correct", "stop", "compute", "collective", "data")
RANK_TAGS = ("rank/images_per_sec", "rank/compute_ms", "rank/collective_ms", "rank/data_ms")  # per step


def train(config: Config, world: World, engine: Engine) -> int:
    """Run the configured training on this rank. Returns 0 when the run finished (or had finished),
    PREEMPTED when a stop was requested and every rank checkpointed."""
    return _Loop(config, world, engine).run()


class _Loop:
    def __init__(self, config: Config, world: World, engine: Engine):
        self.config, self.world, self.engine, self.comm = config, world, engine, engine.comm
        self.log = log.get()
        self.claim: rundir.Claim | None = None  # the chief's
        self._agree_on_run()
        self.fingerprint = identity.fingerprint(config, engine.data_info["sha256"])
        self.ckpt_dir = Path(config.checkpoint.dir) if config.checkpoint.dir else self.run_dir / "checkpoints"
        self.n_train = engine.n_train
        self.shard_size = shard_size(self.n_train, world.size)
        self.per_epoch = steps_per_epoch(self.shard_size, engine.batch_per_rank)
        self.epoch, self.step, self.sample, self.history = 0, 0, 0, []
        self.epoch_sums = np.zeros(3)  # this epoch's images, loss sum, correct, all ranks: the epoch's train figures
        self.world_sizes: list[dict] = []  # one entry per start of the run: its world size and steps
        self.first_step_at: float | None = None
        self.sample_log = None  # opened when training starts (MNIST_DIST_SAMPLE_LOG)
        self.process_started = process_start()  # for each epoch's wall time
        self.meter = ThroughputMeter(config.train.warmup_steps, config.log.interval, engine.sync)
        self.stop_requested = self.stopping = False
        self.writer: ScalarWriter | None = None
        self.rank_writers: list[ScalarWriter] = []  # the chief's: one TensorBoard run per rank, overlaid
        self.step_seconds = self.epoch_seconds = 0.0  # this interval's time in engine.train_step, start_epoch
        self.split_totals = np.zeros(4)  # this rank's compute, collective, data seconds and their steps

    def _agree_on_run(self) -> None:
        """Rank 0 claims the run directory (launch.outputs.rundir); every rank learns from it the run's
        directory, id and state, or that rank 0 refused to start (and said why)."""
        started, refusal = time.time(), None
        if self.world.is_chief:
            try:
                self.claim = rundir.claim(
                    self.config, self.engine.framework, self.world, stamp(started), self.config.checkpoint.dir
                )
            except UserError as exc:
                refusal = exc
        c = self.claim
        mine = (
            [started, c.suffix, c.run_id, c.finished, 0]
            if c
            else [started, 0, 0, 0, refusal.exit_code if refusal else 0]
        )
        agreed = self.comm.gather_rows(mine)[0]
        if refusal:
            raise refusal
        if agreed[4]:
            raise SystemExit(int(agreed[4]))  # rank 0's line says why
        self.started = float(agreed[0])  # also names this start in the sample log
        self.run_dir = run_dir_for(self.config, self.engine.framework, self.world, stamp(self.started), int(agreed[1]))
        self.run_id, self.finished = identity.id_text(int(agreed[2])), bool(agreed[3])

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True  # acted on at the next interval, by every rank at the same step

    def run(self) -> int:
        # SIGTERM (scancel, a Kubernetes or TFJob preemption, `mnist-dist run` stopped) and Slurm's
        # preemption warning (sbatch --signal=USR1@60) stop the run at a common step with a checkpoint.
        # torchrun does not forward SIGUSR1 to its workers (pytorch#154849): the sbatch templates also
        # write STOP_FILE.
        with signals.handling((signal.SIGUSR1, signal.SIGTERM), self._request_stop):
            return self._run()

    def _run(self) -> int:
        try:
            if self.config.checkpoint.resume and self._resume_finished_run():
                self.comm.barrier()  # leave together, as _finish does
                return 0
            self._start()
            with _progress_bar(self.step + self._steps_left(), self.config, self.world, self.step) as bar:
                while not self._done():
                    self._train_epoch(bar)
                    if self.stopping:
                        return self._stop()
                    self._end_epoch()
            self._finish()
            return 0
        finally:
            for writer in [self.writer, *self.rank_writers]:
                if writer:
                    writer.close()
            if self.sample_log:
                self.sample_log.close()
            if self.claim:
                self.claim.lock.release()

    def _start(self) -> None:
        cfg, engine = self.config, self.engine
        self.sample_log = _open_sample_log(self.world.rank)
        lr, global_batch = cfg.scaled_lr(self.world.size), engine.batch_per_rank * self.world.size
        self.world_sizes.append(
            {
                "world_size": self.world.size,
                "global_batch_size": global_batch,
                "lr": lr,
                "steps": [self.step, self.step],
                "epoch": self.epoch,
                "sample": self.sample,
            }
        )
        self.hosts = gather_text(self.comm, socket.gethostname())
        self.interfaces = gather_text(self.comm, interface_towards(resolve(self.world.master_addr)) or "")
        self.stragglers = StragglerWatch(cfg.log.straggler_threshold, self.hosts)
        if self.world.is_chief:
            create_run_dir(cfg, self.run_dir, self._identity())
            self.writer = ScalarWriter(self.run_dir, first_step=self.step + 1)
            if self.world.size > 1:
                ranks = self.run_dir / "ranks"
                self.rank_writers = [ScalarWriter(ranks / f"rank{r}", self.step + 1) for r in range(self.world.size)]
            self.log.info(
                f"{self.world.size} worker(s) via {self.world.started_by}, {engine.backend} on {engine.device}, "
                f"global batch {global_batch}, lr {lr:g}, run dir {self.run_dir}"
            )

    def _done(self) -> bool:
        max_steps = self.config.train.max_steps
        return self.epoch >= self.config.train.epochs or (max_steps is not None and self.step >= max_steps)

    def _steps_left(self) -> int:
        """Steps to the end of the run at this world size (for the progress bar)."""
        this_epoch = steps_per_epoch((self.n_train - self.sample) // self.world.size, self.engine.batch_per_rank)
        left = this_epoch + max(self.config.train.epochs - self.epoch - 1, 0) * self.per_epoch
        max_steps = self.config.train.max_steps
        return min(left, max_steps - self.step) if max_steps else left

    def _world_size_history(self) -> list[dict]:
        """Every start's world size and steps, this start's up to the current step."""
        self.world_sizes[-1]["steps"][1] = self.step
        return self.world_sizes

    def _identity(self) -> dict:
        """Whose a checkpoint is: launch.outputs.identity."""
        return {"id": self.run_id, "dir": str(self.run_dir), "fingerprint": self.fingerprint}

    def _progress(self) -> dict:
        """What a checkpoint records of where training stands, and for which run."""
        return {
            "run": self._identity(),
            "epoch": self.epoch,
            "step": self.step,
            "sample": self.sample,
            "epoch_sums": self.epoch_sums.tolist(),
            "history": history_to_dicts(self.history),
            "world_size_history": self._world_size_history(),
        }

    def _stop(self) -> int:
        """Every rank agreed to stop at this step: checkpoint it (mid-epoch) and leave."""
        self.engine.save_checkpoint(self.ckpt_dir, self.step, self._progress())
        if self.world.is_chief:
            (self.run_dir / STOP_FILE).unlink(missing_ok=True)
            self.log.info(
                f"stop requested: checkpointed step {self.step} in {self.ckpt_dir}; resume with checkpoint.resume=true"
            )
        self.comm.barrier()  # no rank leaves while the chief still saves
        return PREEMPTED

    def _resume_finished_run(self) -> bool:
        """Continue from the latest checkpoint, at this world size; True if the run had already finished."""
        framework = self.engine.framework
        checkpoints.refuse_other_frameworks(self.ckpt_dir, framework)
        path = checkpoints.latest(self.ckpt_dir, framework)
        if path is None and self.finished:
            return self._say_finished("its summary.json is there, and no checkpoint to train further from")
        if path is None:
            if self.world.is_chief:
                self.log.info(f"no checkpoint in {self.ckpt_dir}; starting from scratch")
            return False
        state = self.engine.restore_checkpoint(path, self.config.scaled_lr(self.world.size))
        self._check_identity(path, state)
        self.epoch, self.step, self.sample = state["epoch"], state["step"], state["sample"]
        self.epoch_sums = np.array(state["epoch_sums"])
        self.history = history_from_dicts(state["history"])
        self.world_sizes = state["world_size_history"]
        if self._done() and not self.finished:
            raise UserError(
                f"{path} is the run's last step, but {self.run_dir} has no summary.json: the run died while "
                "writing its results; train it again with log.overwrite=true and an empty checkpoint.dir"
            )
        if self._done():
            return self._say_finished(
                f"{self.epoch} of {self.config.train.epochs} epochs, step {self.step}; {path.name}; "
                "raise train.epochs to train it further"
            )
        if self.world.is_chief:
            self._say_resuming(path)
        return False

    def _check_identity(self, path: Path, state: dict) -> None:
        """Refuse a checkpoint of another run, or of this run under settings that define another training."""
        run = state.get("run")
        if "sample" not in state or run is None:  # the engines pass the progress on as this loop saved it
            raise UserError(
                f"{path}: written by an older mnist-dist, without the run identity it needs to resume; "
                "start a new run (another log.run_name)"
            )
        if run["id"] != self.run_id:
            raise UserError(
                f"{path} belongs to another run ({run['dir']}, id {run['id']}), not to {self.run_dir}: point "
                "checkpoint.dir at this run's checkpoints, or continue that run with its log.run_name"
            )
        changed = identity.differences(run["fingerprint"], self.fingerprint)
        if changed:
            raise UserError(
                f"{path} was trained with other settings ({'; '.join(changed)}): resume with the "
                "checkpoint's, or start a new run (another log.run_name)"
            )

    def _say_finished(self, detail: str) -> bool:
        if self.world.is_chief:
            self.log.info(f"{self.run_dir} already finished ({detail}): nothing to do, its results stay as they are")
        return True

    def _say_resuming(self, path: Path) -> None:
        before = self.world_sizes[-1]["world_size"]
        self.log.info(
            f"resuming from {path} (epoch {self.epoch}, step {self.step}, sample {self.sample} of "
            f"{self.n_train} in this epoch) on {self.world.size} worker(s)"
            + (f", not {before}" if before != self.world.size else "")
        )
        if self.config.dist.compression == "powersgd":
            self.log.info(
                "PowerSGD's error feedback is not in checkpoints: it restarts from zero, after "
                f"dist.powersgd_start={self.config.dist.powersgd_start} plain steps"
            )

    def _train_epoch(self, bar) -> None:
        cfg = self.config.train
        self.meter.resume()  # the epoch's shard and gather are input work: timed like the steps
        # From this epoch's position: 0, or where a run stopped, on however many workers it had.
        shard = shard_indices(
            self.n_train, self.world.rank, self.world.size, self.epoch, cfg.seed, cfg.shuffle, start=self.sample
        )
        began = time.perf_counter()
        self.engine.start_epoch(shard.indices)
        self.epoch_seconds += time.perf_counter() - began
        steps = steps_per_epoch(len(shard.indices), self.engine.batch_per_rank)
        if cfg.max_steps:
            steps = min(steps, cfg.max_steps - self.step)
        start, trained = self.sample, 0
        for i in range(steps):
            began = time.perf_counter()
            images = self.engine.train_step(i)
            self.step_seconds += time.perf_counter() - began
            if self.sample_log:
                self._log_samples(shard.indices[trained : trained + images])
            trained += images
            self.step += 1
            # Every rank's shard is as long as this one: together they trained world size x as much.
            # The last step passes the (< world size) samples no rank was dealt, too.
            self.sample = self.n_train if trained == len(shard.indices) else start + trained * self.world.size
            if self.meter.step(images, self.step, end_of_epoch=i == steps - 1):
                self._log_interval(bar)
                if self.stopping:
                    return
            if self.first_step_at is None:
                self.first_step_at = time.time()
            bar.update(1)

    def _log_samples(self, indices: np.ndarray) -> None:
        record = {
            "attempt": self.started,
            "rank": self.world.rank,
            "world_size": self.world.size,
            "epoch": self.epoch,
            "step": self.step + 1,
            "indices": indices.tolist(),
        }
        self.sample_log.write(json.dumps(record) + "\n")
        self.sample_log.flush()

    def _log_interval(self, bar) -> None:
        images, seconds, steps = self.meter.take_interval()
        loss_sum, correct = self.engine.take_outputs()
        timing = split(self.epoch_seconds, self.step_seconds, *self.engine.take_timings())
        self.epoch_seconds = self.step_seconds = 0.0
        self.split_totals += [*np.nan_to_num(timing), steps]
        stop = self.stop_requested or (self.world.is_chief and (self.run_dir / STOP_FILE).exists())
        mine = (images, seconds, steps, loss_sum, correct, float(stop), *timing)
        rows = gather(self.comm, dict(zip(INTERVAL_ROW, mine)))
        self.stopping = bool(rows["stop"].max())  # one rank's request stops every rank at this step
        if not np.isfinite(rows["loss_sum"]).all():
            raise UserError(
                f"the training loss became NaN or infinite between steps {self.step - int(steps)} and "
                f"{self.step}: lower train.lr (now {self.config.scaled_lr(self.world.size):g}) "
                "or train in fp32"
            )
        self.epoch_sums += [rows.total("images"), rows.total("loss_sum"), rows.total("correct")]
        if self.world.is_chief:
            scalars = interval_scalars(rows)
            self._write_scalars(scalars)
            self._write_rank_scalars(rows)
            for line in self.stragglers.observe(rows):
                self.log.warning(line)
            bar.set_postfix(loss=f"{scalars[TRAIN_LOSS]:.3f}", img_s=f"{scalars[IMAGES_PER_SEC]:,.0f}")

    def _write_rank_scalars(self, rows: Rows) -> None:
        """Each rank's images/s and its step's split, in its own run: TensorBoard overlays them."""
        steps = np.maximum(rows["steps"], 1)
        per_rank = (rows["images"] / np.maximum(rows["seconds"], 1e-9), *(rows[k] / steps * 1000 for k in SPLIT))
        for rank, writer in enumerate(self.rank_writers):
            for tag, values in zip(RANK_TAGS, per_rank):
                if np.isfinite(values[rank]):
                    writer.scalar(tag, values[rank], self.step)

    def _write_scalars(self, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.scalar(tag, value, self.step)

    def _evaluate(self) -> tuple[float, float]:
        loss_sum, correct, count = self.engine.evaluate(self.world.rank, self.world.size)
        rows = gather(self.comm, {"loss_sum": loss_sum, "correct": correct, "count": count})
        return rows.total("loss_sum") / rows.total("count"), rows.total("correct") / rows.total("count")

    def _end_epoch(self) -> None:
        eval_loss, eval_acc = self._evaluate()
        self.epoch, self.sample = self.epoch + 1, 0
        images, loss_sum, correct = (float(v) for v in self.epoch_sums)
        self.epoch_sums = np.zeros(3)
        record = EpochRecord(
            self.epoch,
            self.step,
            loss_sum / images,
            correct / images,
            eval_loss,
            eval_acc,
            time.time() - self.process_started,
        )
        self.history.append(record)
        interval = self.config.checkpoint.interval
        if interval and self.epoch % interval == 0 and not self._done():  # the last one: after the results
            self.engine.save_checkpoint(self.ckpt_dir, self.step, self._progress())
        if self.world.is_chief:
            self._write_scalars({EVAL_LOSS: record.eval_loss, EVAL_ACCURACY: record.eval_accuracy})
            self.log.info(
                f"{self._position(record)}: train loss {record.train_loss:.4f} acc {record.train_accuracy:.4f} | "
                f"eval loss {record.eval_loss:.4f} acc {record.eval_accuracy:.4f} | {self._rate_text()}"
            )

    def _position(self, record: EpochRecord) -> str:
        """`epoch E/EPOCHS step S`, or `epoch E step S/MAX` when train.max_steps ends the run first."""
        cfg = self.config.train
        if cfg.max_steps and cfg.max_steps < self.per_epoch * cfg.epochs:
            return f"epoch {record.epoch} step {record.step}/{cfg.max_steps}"
        return f"epoch {record.epoch}/{cfg.epochs} step {record.step}"

    def _rate_text(self) -> str:
        """This start's throughput so far, or why there is none yet."""
        m = self.meter
        if not m.measured_steps:
            return f"no step timed yet (this start's first {self.config.train.warmup_steps} are warm-up)"
        return f"{m.measured_images * self.world.size / max(m.measured_seconds, 1e-9):,.0f} img/s"

    def _finish(self) -> None:
        m = self.meter
        mine = (
            m.measured_images,
            m.measured_seconds,
            m.measured_steps,
            peak_rss_bytes(),
            usable_cpus(),
            threads_per_worker(self.config, self.world),
            *self.split_totals,
        )
        final = gather(self.comm, dict(zip(FINAL_ROW, mine)))
        if self.world.is_chief:
            self._write_results(final)
        # After the results, so that a run with its last checkpoint has them: a run that dies while
        # writing them resumes from the checkpoint before, and trains its last epochs again.
        if self.config.checkpoint.interval:
            self.engine.save_checkpoint(self.ckpt_dir, self.step, self._progress())
        # Every rank leaves together: a worker that exits while the chief still writes looks to
        # TensorFlow's coordination service like a crashed task, and it logs an error saying so.
        self.comm.barrier()

    def _write_results(self, final: Rows) -> None:
        engine = self.engine
        model_file = engine.save_model(self.run_dir)
        facts = RunFacts(
            framework=engine.framework,
            backend=engine.backend,
            device=engine.device,
            global_batch_size=engine.batch_per_rank * self.world.size,
            steps=self.step,
            history=self.history,
            first_step_at=self.first_step_at or time.time(),
            dropped_per_epoch=self.n_train - self.shard_size * self.world.size,
            world_size_history=self._world_size_history(),
            framework_versions=engine.versions,
            run_id=self.run_id,
            data=engine.data_info,
            hosts=self.hosts,
            interfaces=self.interfaces,
        )
        summary = make_summary(self.config, self.world, facts, final, model_file.stat().st_size)
        write_summary(self.run_dir, summary)
        write_json(self.run_dir / HISTORY_FILE, {"epochs": history_to_dicts(self.history)})
        plot_history(
            self.history,
            self.run_dir / "history.png",
            f"{engine.framework} {self.config.model.name} on {self.config.data.dataset}, {self.world.size} worker(s)",
        )
        rate = (
            f"{summary.images_per_sec:,.0f} img/s ({summary.images_per_sec_per_worker:,.0f} per worker)"
            if self.meter.measured_steps
            else f"no throughput: every step of this start was warm-up (train.warmup_steps={summary.warmup_steps})"
        )
        self.log.info(
            f"done: {summary.steps} steps, test accuracy {summary.final_eval_accuracy:.4f}, {rate}; {self.run_dir}"
        )


def _open_sample_log(rank: int):
    folder = os.environ.get("MNIST_DIST_SAMPLE_LOG")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return open(Path(folder) / f"rank{rank}.jsonl", "a")


def _progress_bar(total: int, config: Config, world: World, initial: int):
    """A tqdm bar on the chief only, shown on a terminal (log.progress=auto) or when forced on.

    OpenMPI hands every rank a pseudo-terminal even when mpirun's output goes to a file, so under
    mpirun `auto` means off.
    """
    from tqdm import tqdm

    terminal = sys.stdout.isatty() and world.source != "openmpi"
    wanted = {"always": True, "never": False, "auto": terminal}[config.log.progress]
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not (wanted and world.is_chief))
