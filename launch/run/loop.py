"""The training loop both trainers share: epochs of steps over each rank's shard, a stop at a common
step, evaluation and checkpoints. What needs a framework is behind `Engine` (launch.run.engine);
which run this is and where it continues from is launch.run.resume; what the chief shows while it
runs, launch.run.reporting; the results at the end, launch.run.results.

The learning rate always follows train.lr_scaling for the world size that is running (the linear
rule keeps lr proportional to the global batch), also after a resume on another world size.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from launch import log, signals
from launch.clock import process_start
from launch.cluster.cpus import threads_per_worker, usable_cpus
from launch.cluster.rendezvous import interface_towards, resolve
from launch.cluster.world import World
from launch.config import Config
from launch.data.shard import shard_indices, shard_size, steps_per_epoch
from launch.errors import UserError
from launch.outputs.rundir import create_run_dir
from launch.outputs.summary import peak_rss_bytes
from launch.run.comm import Rows, gather, gather_text
from launch.run.engine import Engine
from launch.run.metrics import ThroughputMeter
from launch.run.progress import EpochSums, Progress
from launch.run.records import EpochRecord, RunFacts
from launch.run.reporting import Reporter
from launch.run.results import write_results
from launch.run.resume import agree_on_run, resume
from launch.run.stragglers import SPLIT, split
from launch.signals import PREEMPTED

STOP_FILE = "PREEMPT"  # a file of this name in the run directory asks every rank to stop and checkpoint
INTERVAL_ROW = ("images", "seconds", "steps", "loss_sum", "correct", "stop", *SPLIT)

# Called after every batch with what it trained: {"attempt", "rank", "world_size", "epoch", "step",
# "indices"}. The loop installs none; tests install one to prove that no sample is lost or repeated.
batch_callbacks: list[Callable[[dict], None]] = []


def train(config: Config, world: World, engine: Engine) -> int:
    """Run the configured training on this rank. Returns 0 when the run finished (or had finished),
    PREEMPTED when a stop was requested and every rank checkpointed."""
    return _Loop(config, world, engine).run()


class _Loop:
    def __init__(self, config: Config, world: World, engine: Engine):
        self.config, self.world, self.engine, self.comm = config, world, engine, engine.comm
        self.log = log.get()
        self.this_run, self.claim = agree_on_run(config, world, engine)  # the claim: the chief's hold on the run dir
        self.ckpt_dir = Path(config.checkpoint.dir) if config.checkpoint.dir else self.this_run.dir / "checkpoints"
        self.n_train = engine.n_train
        self.shard_size = shard_size(self.n_train, world.size)
        self.per_epoch = steps_per_epoch(self.shard_size, engine.batch_per_rank)
        self.progress = Progress()
        self.meter = ThroughputMeter(config.train.warmup_steps, config.log.interval, engine.sync)
        self.signalled = self.stopping = False  # a signal reached this rank; every rank agreed to stop
        self.reporter: Reporter | None = None
        self.process_started = process_start()  # read once: each epoch's wall time counts from it
        self.first_step_at: float | None = None
        self.step_seconds = self.epoch_seconds = 0.0  # this interval's time in engine.train_step, start_epoch
        self.split_totals = dict.fromkeys((*SPLIT, "split_steps"), 0.0)  # this rank's, for the summary

    def run(self) -> int:
        # SIGTERM (scancel, a Kubernetes or TFJob preemption, `mnist-dist run` stopped) and Slurm's
        # preemption warning (sbatch --signal=USR1@60) stop the run at a common step with a checkpoint.
        # torchrun does not forward SIGUSR1 to its workers (pytorch#154849): the sbatch templates also
        # write STOP_FILE.
        with signals.handling((signal.SIGUSR1, signal.SIGTERM), self._on_signal):
            try:
                return self._run()
            finally:
                if self.reporter:
                    self.reporter.close()
                if self.claim:
                    self.claim.lock.release()

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True  # acted on at the next interval, by every rank at the same step

    def _run(self) -> int:
        if self.config.checkpoint.resume:
            resumed = resume(self.config, self.world, self.engine, self.this_run, self.ckpt_dir)
            if resumed.finished:
                self.comm.barrier()  # leave together, as _finish does
                return 0
            self.progress = resumed.progress
        self._start()
        while not self.progress.done(self.config.train):
            self._train_epoch()
            if self.stopping:
                return self._stop()
            self._end_epoch()
        self._finish()
        return 0

    def _start(self) -> None:
        cfg, world, engine, p = self.config, self.world, self.engine, self.progress
        lr, global_batch = cfg.scaled_lr(world.size), engine.batch_per_rank * world.size
        p.start(world.size, global_batch, lr)
        self.hosts = gather_text(self.comm, socket.gethostname())
        self.interfaces = gather_text(self.comm, interface_towards(resolve(world.master_addr)) or "")
        if world.is_chief:
            create_run_dir(cfg, self.this_run.dir, self.this_run.to_dict())
            self.log.info(
                f"{world.size} worker(s) via {world.started_by}, {engine.backend} on {engine.device}, "
                f"global batch {global_batch}, lr {lr:g}, run dir {self.this_run.dir}{_ports_note(world, self.hosts)}"
            )
        self.reporter = Reporter(cfg, world, self.this_run.dir, p.step + 1, self.hosts)
        self.reporter.open_bar(total=p.step + self._steps_left(), initial=p.step)

    def _steps_left(self) -> int:
        """Steps to the end of the run at this world size (for the progress bar)."""
        p, train = self.progress, self.config.train
        this_epoch = steps_per_epoch((self.n_train - p.sample) // self.world.size, self.engine.batch_per_rank)
        left = this_epoch + max(train.epochs - p.epoch - 1, 0) * self.per_epoch
        return min(left, train.max_steps - p.step) if train.max_steps else left

    def _train_epoch(self) -> None:
        cfg, p = self.config.train, self.progress
        self.meter.resume()  # the epoch's shard and gather are input work: timed like the steps
        # From this epoch's position: 0, or where a run stopped, on however many workers it had.
        shard = shard_indices(self.n_train, self.world.rank, self.world.size, p.epoch, cfg.seed, cfg.shuffle, p.sample)
        began = time.perf_counter()
        self.engine.start_epoch(shard.indices)
        self.epoch_seconds += time.perf_counter() - began
        steps = steps_per_epoch(len(shard.indices), self.engine.batch_per_rank)
        if cfg.max_steps:
            steps = min(steps, cfg.max_steps - p.step)
        start, trained = p.sample, 0
        for i in range(steps):
            began = time.perf_counter()
            images = self.engine.train_step(i)
            self.step_seconds += time.perf_counter() - began
            self._after_batch(shard.indices[trained : trained + images])
            trained += images
            p.step += 1
            # Every rank's shard is as long as this one: together they trained world size x as much.
            # The last step passes the (< world size) samples no rank was dealt, too.
            p.sample = self.n_train if trained == len(shard.indices) else start + trained * self.world.size
            if self.meter.step(images, p.step, end_of_epoch=i == steps - 1):
                self._end_interval()
                if self.stopping:
                    return
            if self.first_step_at is None:
                self.first_step_at = time.time()
            self.reporter.advance()

    def _after_batch(self, indices: np.ndarray) -> None:
        if batch_callbacks:
            p, w = self.progress, self.world
            batch = {"attempt": self.this_run.started, "rank": w.rank, "world_size": w.size, "epoch": p.epoch}
            batch.update(step=p.step + 1, indices=indices)
            for callback in batch_callbacks:
                callback(batch)

    def _end_interval(self) -> None:
        """Every rank's interval gathered: stop where any rank asked, refuse a NaN loss, report."""
        images, seconds, steps = self.meter.take_interval()
        loss_sum, correct = self.engine.take_outputs()
        timing = split(self.epoch_seconds, self.step_seconds, *self.engine.take_timings())
        self.epoch_seconds = self.step_seconds = 0.0
        for name, seconds_in in zip(SPLIT, timing):
            self.split_totals[name] += np.nan_to_num(seconds_in)
        self.split_totals["split_steps"] += steps
        stop = self.signalled or (self.world.is_chief and (self.this_run.dir / STOP_FILE).exists())
        mine = (images, seconds, steps, loss_sum, correct, float(stop), *timing)
        rows = gather(self.comm, dict(zip(INTERVAL_ROW, mine)))
        self.stopping = bool(rows["stop"].max())  # one rank's request stops every rank at this step
        _refuse_nan(rows, self.progress.step - int(steps), self.progress.step, self.config.scaled_lr(self.world.size))
        self.progress.sums.add(rows)
        self.reporter.interval(rows, self.progress.step)

    def _stop(self) -> int:
        """Every rank agreed to stop at this step: checkpoint it (mid-epoch) and leave."""
        step = self.progress.step
        self._checkpoint()
        if self.world.is_chief:
            (self.this_run.dir / STOP_FILE).unlink(missing_ok=True)
            self.log.info(
                f"stop requested: checkpointed step {step} in {self.ckpt_dir}; resume with checkpoint.resume=true"
            )
        self.comm.barrier()  # no rank leaves while the chief still saves
        return PREEMPTED

    def _checkpoint(self) -> None:
        self.engine.save_checkpoint(self.ckpt_dir, self.progress.step, self.progress.to_dict(self.this_run.to_dict()))

    def _end_epoch(self) -> None:
        p = self.progress
        loss_sum, correct, count = self.engine.evaluate(self.world.rank, self.world.size)
        test = gather(self.comm, {"loss_sum": loss_sum, "correct": correct, "count": count})
        sums, p.sums, p.epoch, p.sample = p.sums, EpochSums(), p.epoch + 1, 0
        record = EpochRecord(
            epoch=p.epoch,
            step=p.step,
            train_loss=sums.loss_sum / sums.images,
            train_accuracy=sums.correct / sums.images,
            eval_loss=test.total("loss_sum") / test.total("count"),
            eval_accuracy=test.total("correct") / test.total("count"),
            wall_s=time.time() - self.process_started,
        )
        p.history.append(record)
        interval = self.config.checkpoint.interval
        if interval and p.epoch % interval == 0 and not p.done(self.config.train):  # the last: after the results
            self._checkpoint()
        self.reporter.epoch(record, self.meter, self.per_epoch)

    def _finish(self) -> None:
        m, cfg = self.meter, self.config
        mine = {"images": m.measured_images, "seconds": m.measured_seconds, "steps": m.measured_steps}
        mine["cpu_seconds"] = m.measured_cpu_seconds
        mine.update(peak_rss=peak_rss_bytes(), cpus=usable_cpus(), threads=threads_per_worker(cfg, self.world))
        final = gather(self.comm, {**mine, **self.split_totals})
        if self.world.is_chief:
            write_results(cfg, self.world, self.engine, self.this_run.dir, self._facts(), final)
        # After the results, so that a run with its last checkpoint has them: a run that dies while
        # writing them resumes from the checkpoint before, and trains its last epochs again.
        if cfg.checkpoint.interval:
            self._checkpoint()
        # Every rank leaves together: a worker that exits while the chief still writes looks to
        # TensorFlow's coordination service like a crashed task, and it logs an error saying so.
        self.comm.barrier()

    def _facts(self) -> RunFacts:
        e, p = self.engine, self.progress
        return RunFacts(
            framework=e.framework,
            backend=e.backend,
            device=e.device,
            global_batch_size=e.batch_per_rank * self.world.size,
            steps=p.step,
            history=p.history,
            first_step_at=self.first_step_at or time.time(),
            dropped_per_epoch=self.n_train - self.shard_size * self.world.size,
            world_size_history=p.world_size_history(),
            framework_versions=e.versions,
            run_id=self.this_run.id,
            data=e.data_info,
            hosts=self.hosts,
            interfaces=self.interfaces,
        )


def _refuse_nan(rows: Rows, first: int, last: int, lr: float) -> None:
    if not np.isfinite(rows["loss_sum"]).all():
        raise UserError(
            f"the training loss became NaN or infinite between steps {first} and {last}: lower "
            f"train.lr (now {lr:g}) or train in fp32"
        )


def _ports_note(world: World, hosts: list[str]) -> str:
    """Across hosts, the start line says what docs/security.md explains: the frameworks' ports let in anyone."""
    if len(set(hosts)) < 2:
        return ""
    return f"; port {world.master_port} and the ranks' must be reachable only inside the cluster"
