"""The training loop both trainers share: epochs, shards, timing, logging, evaluation, checkpoints,
summary. Everything that needs a framework is behind `Engine`, which `torch_dist` and `tf_dist`
implement; so the two trainers differ only where their frameworks differ.
"""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from launch import trainer
from launch.config import Config
from launch.errors import UserError
from launch.metrics import EVAL_ACCURACY, EVAL_LOSS, TRAIN_LOSS, IMAGES_PER_SEC, ThroughputMeter, interval_scalars
from launch.rundir import HISTORY_FILE, create_run_dir, run_dir_for, write_json_atomic
from launch.shard import shard_indices, shard_size, steps_per_epoch
from launch.summary import peak_rss_bytes, write_summary
from launch.world import World


class Engine(ABC):
    """What a framework provides to the loop. All ranks call every method in the same order, since
    some of them are collectives; methods documented 'chief' are called on rank 0 only."""

    framework: str  # torch | tf
    batch_per_rank: int  # images one rank takes per step (train.batch_size x its local replicas)
    backend: str  # shown in summary.json: gloo, nccl, the TF strategy
    device: str  # cpu | cuda | gpu
    versions: dict  # framework versions for summary.json

    @abstractmethod
    def gather_rows(self, row: list[float]) -> np.ndarray:
        """Every rank's row of numbers as a (world size, len(row)) array, on every rank."""

    @abstractmethod
    def start_epoch(self, indices: np.ndarray, first_batch: int) -> None:
        """Prepare this rank's batches for an epoch from its shard (positions in the training set);
        the first train_step will be batch `first_batch` (above 0 after a mid-epoch resume)."""

    @abstractmethod
    def train_step(self, batch: int) -> int:
        """Train on batch number `batch` of the epoch; return its number of images."""

    @abstractmethod
    def take_outputs(self) -> tuple[float, float]:
        """This rank's (loss sum, correct predictions) since the last call: a host sync."""

    @abstractmethod
    def sync(self) -> None:
        """Wait until the device has finished the work queued so far."""

    @abstractmethod
    def evaluate(self, world: World) -> tuple[float, float]:
        """Loss and accuracy over the whole test set, every rank taking its part, combined."""

    @abstractmethod
    def save_checkpoint(self, folder: Path, epoch: int, step: int, history: list[dict]) -> None:
        """Save a checkpoint of `epoch` into `folder` (the chief writes there)."""

    @abstractmethod
    def restore_checkpoint(self, folder: Path) -> dict | None:
        """Load the latest checkpoint in `folder`: {"epoch", "step", "history", "path"}, or None."""

    @abstractmethod
    def open_writer(self, run_dir: Path) -> None:
        """Chief: start TensorBoard logging into `run_dir`."""

    @abstractmethod
    def write_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Chief: log scalars at `step`."""

    @abstractmethod
    def save_model(self, run_dir: Path) -> Path:
        """Chief: save the trained model for use and size measurement; return the file."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close what the engine opened."""


CHECKPOINT_FILES = {"torch": "step-*.pt", "tf": "ckpt-*.index"}  # what each engine's checkpoints look like
PREEMPTED = 75  # exit code of a run stopped early by a preemption signal, checkpointed to resume
STOP_FILE = "PREEMPT"  # a file of this name in the run directory asks every rank to stop and checkpoint


def train(config: Config, world: World, engine: Engine, n_train: int, prog: str) -> int:
    """Run the configured training on this rank. `n_train` is the training set's size. Returns 0
    when the run finished, PREEMPTED when a stop was requested and every rank checkpointed."""
    return _Loop(config, world, engine, n_train, prog).run()


class _Loop:
    def __init__(self, config: Config, world: World, engine: Engine, n_train: int, prog: str):
        self.config, self.world, self.engine, self.prog = config, world, engine, prog
        # A default run name needs one time stamp on every rank: rank 0's.
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(engine.gather_rows([time.time()])[0, 0]))
        self.run_dir = run_dir_for(config, engine.framework, world, stamp)
        self.ckpt_dir = Path(config.checkpoint.dir) if config.checkpoint.dir else self.run_dir / "checkpoints"
        if world.is_chief:
            create_run_dir(config, self.run_dir)
        self.n_train = n_train
        self.shard_size = shard_size(n_train, world.size)
        self.per_epoch = steps_per_epoch(self.shard_size, engine.batch_per_rank)
        full = config.train.epochs * self.per_epoch
        self.total = min(full, config.train.max_steps or full)
        self.epoch, self.step, self.history = 0, 0, []
        self.first_step_at: float | None = None
        self.meter = ThroughputMeter(config.train.warmup_steps, config.log.interval, engine.sync)
        self.stop_requested = self.stopping = False

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True  # acted on at the next interval, by every rank at the same step

    def run(self) -> int:
        cfg, engine = self.config, self.engine
        # Slurm's preemption warning (sbatch --signal=USR1@60); under Slurm also SIGTERM. torchrun does
        # not forward SIGUSR1 to its workers (pytorch#154849): the sbatch templates also write STOP_FILE.
        signals = [signal.SIGUSR1] + ([signal.SIGTERM] if os.environ.get("SLURM_JOB_ID") else [])
        for sig in signals:
            signal.signal(sig, self._request_stop)
        if cfg.checkpoint.resume:
            self._resume()
        if self.world.is_chief:
            engine.open_writer(self.run_dir)
            print(f"{self.prog}: {self.world.size} worker(s) via {self.world.source}, {engine.backend} on "
                  f"{engine.device}, global batch {engine.batch_per_rank * self.world.size}, "
                  f"lr {cfg.scaled_lr(self.world.size):g}, run dir {self.run_dir}", flush=True)
        with trainer.progress_bar(self.total, cfg, self.world, initial=min(self.step, self.total)) as bar:
            while self.epoch < cfg.train.epochs and self.step < self.total:
                self._train_epoch(bar)
                if self.stopping:
                    return self._stop()
                self._end_epoch()
        self._finish()
        return 0

    def _stop(self) -> int:
        """Every rank agreed to stop at this step: checkpoint it (mid-epoch) and leave."""
        self.engine.save_checkpoint(self.ckpt_dir, self.epoch, self.step, trainer.history_to_dicts(self.history))
        if self.world.is_chief:
            (self.run_dir / STOP_FILE).unlink(missing_ok=True)
            print(f"{self.prog}: stop requested: checkpointed step {self.step} in {self.ckpt_dir}; "
                  "resume with checkpoint.resume=true", flush=True)
        self.engine.close()
        return PREEMPTED

    def _resume(self) -> None:
        for framework, pattern in CHECKPOINT_FILES.items():
            if framework != self.engine.framework and any(self.ckpt_dir.glob(pattern)):
                raise UserError(f"{self.ckpt_dir} holds {framework} checkpoints, which {self.engine.framework} cannot "
                                "resume: point checkpoint.dir (or log.run_name) at this framework's run")
        state = self.engine.restore_checkpoint(self.ckpt_dir)
        if state is None:
            if self.world.is_chief:
                print(f"{self.prog}: no checkpoint in {self.ckpt_dir}; starting from scratch", flush=True)
            return
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = trainer.history_from_dicts(state["history"])
        if self.world.is_chief:
            print(f"{self.prog}: resuming from {state['path']} (epoch {self.epoch}, step {self.step})", flush=True)

    def _train_epoch(self, bar) -> None:
        cfg = self.config.train
        self.meter.resume()  # the epoch's shard and gather are input work: timed like the steps
        shard = shard_indices(self.n_train, self.world.rank, self.world.size, self.epoch, cfg.seed, cfg.shuffle)
        done = self.step - self.epoch * self.per_epoch  # batches of this epoch before a mid-epoch resume
        self.engine.start_epoch(shard.indices, done)
        self.epoch_sums = np.zeros(3)  # images, loss sum, correct: all ranks
        steps = min(self.per_epoch, self.total - self.epoch * self.per_epoch)
        for i in range(done, steps):
            images = self.engine.train_step(i)
            self.step += 1
            if self.meter.step(images, self.step, end_of_epoch=i == steps - 1):
                self._log_interval(bar)
                if self.stopping:
                    return
            if self.first_step_at is None:
                self.first_step_at = time.time()
            bar.update(1)

    def _log_interval(self, bar) -> None:
        images, seconds, steps = self.meter.take_interval()
        loss_sum, correct = self.engine.take_outputs()
        stop = self.stop_requested or (self.world.is_chief and (self.run_dir / STOP_FILE).exists())
        rows = self.engine.gather_rows([images, seconds, steps, loss_sum, correct, float(stop)])
        self.stopping = bool(rows[:, 5].max())  # one rank's request stops every rank at this step
        if not np.isfinite(rows[:, 3]).all():
            raise UserError(f"the training loss became NaN or infinite between steps {self.step - int(steps)} and "
                            f"{self.step}: lower train.lr (now {self.config.scaled_lr(self.world.size):g}) "
                            "or train in fp32")
        self.epoch_sums += rows.sum(axis=0)[[0, 3, 4]]
        if self.world.is_chief:
            scalars = interval_scalars(rows)
            self.engine.write_scalars(scalars, self.step)
            bar.set_postfix(loss=f"{scalars[TRAIN_LOSS]:.3f}", img_s=f"{scalars[IMAGES_PER_SEC]:,.0f}")

    def _end_epoch(self) -> None:
        eval_loss, eval_acc = self.engine.evaluate(self.world)
        self.epoch += 1
        images, loss_sum, correct = (float(v) for v in self.epoch_sums)
        record = trainer.EpochRecord(self.epoch, self.step, loss_sum / images, correct / images,
                                     float(eval_loss), float(eval_acc), time.time() - trainer.PROCESS_START)
        self.history.append(record)
        interval = self.config.checkpoint.interval
        last = self.epoch == self.config.train.epochs or self.step >= self.total
        if interval and (self.epoch % interval == 0 or last):
            self.engine.save_checkpoint(self.ckpt_dir, self.epoch, self.step, trainer.history_to_dicts(self.history))
        if self.world.is_chief:
            self.engine.write_scalars({EVAL_LOSS: record.eval_loss, EVAL_ACCURACY: record.eval_accuracy}, self.step)
            rate = self.meter.measured_images * self.world.size / max(self.meter.measured_seconds, 1e-9)
            trainer.log_epoch(record, self.config.train.epochs, rate)

    def _finish(self) -> None:
        m = self.meter
        rows = self.engine.gather_rows([m.measured_images, m.measured_seconds, m.measured_steps, peak_rss_bytes()])
        if self.world.is_chief:
            self._write_results(rows)
        # Every rank leaves together: a worker that exits while the chief still writes looks to
        # TensorFlow's coordination service like a crashed task, and it logs an error saying so.
        self.engine.gather_rows([0.0])
        self.engine.close()

    def _write_results(self, rows: np.ndarray) -> None:
        model_file = self.engine.save_model(self.run_dir)
        summary = trainer.make_summary(
            self.config, self.world, framework=self.engine.framework, backend=self.engine.backend,
            device=self.engine.device, global_batch_size=self.engine.batch_per_rank * self.world.size, final_rows=rows, steps=self.step, history=self.history,
            model_size_bytes=model_file.stat().st_size,
            first_step_at=self.first_step_at or time.time(), dropped_per_epoch=self.n_train - self.shard_size * self.world.size,
            restarts=self.world.restarts, framework_versions=self.engine.versions)
        write_summary(self.run_dir, summary)
        write_json_atomic(self.run_dir / HISTORY_FILE, {"epochs": trainer.history_to_dicts(self.history)})
        trainer.plot_history(self.history, self.run_dir / "history.png",
                             f"{self.engine.framework} {self.config.model.name} on {self.config.data.dataset}, "
                             f"{self.world.size} worker(s)")
        print(f"{self.prog}: done: {summary.steps} steps, test accuracy {summary.final_eval_accuracy:.4f}, "
              f"{summary.images_per_sec:,.0f} img/s ({summary.images_per_sec_per_worker:,.0f} per worker); "
              f"{self.run_dir}", flush=True)
