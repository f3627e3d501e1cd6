"""A third framework for the tests: softmax regression in numpy, driving the real training loop in
this process. Its ranks are threads that share a `ThreadComm`; gradients are averaged across them
as DDP does. Registering it is what adding a framework takes: one engine, one row in the table.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from launch.cluster.world import World
from launch.config import Config, load_config
from launch.data.datasets import load_dataset
from launch.frameworks import FRAMEWORKS, Framework
from launch.outputs.checkpoints import DamagedCheckpoint
from launch.run import loop
from launch.run.engine import Engine

ROW = Framework(
    name="numpy",
    module="numpy_engine",
    checkpoint=r"np-(\d+)\.json",
    color="tab:gray",
    needs_tf_config=False,
    torchrun_agent=False,
    launchers=("local",),
    elastic_launchers=(),
    backends=("auto",),
    strategies=("auto",),
    compressions={"auto": ("none",)},
    reload_model="import sys, numpy; print(numpy.load(sys.argv[1]).size)",
    model_file="model.npy",
    fp16_mechanism="numpy has no fp16 training",
    cuda_build="nothing: numpy trains on the CPU",
    compression_fix="one process has nothing to compress",
)


def register(monkeypatch) -> None:
    monkeypatch.setitem(FRAMEWORKS, "numpy", ROW)


class ThreadComm:
    """The collectives of `size` ranks that are threads of this process: round k of every rank's
    all_gather meets round k of the others'. A rank that fails breaks the rounds not yet complete."""

    def __init__(self, size: int):
        self.size, self.rounds, self.broken = size, {}, False
        self.changed = threading.Condition()

    def exchange(self, rank: int, round_no: int, value):
        with self.changed:
            slot = self.rounds.setdefault(round_no, {})
            slot[rank] = value
            self.changed.notify_all()
            if not self.changed.wait_for(lambda: len(slot) == self.size or self.broken, timeout=60):
                raise TimeoutError(f"rank {rank}: the other ranks did not reach collective {round_no}")
            if len(slot) < self.size:
                raise RuntimeError(f"rank {rank}: another rank failed before collective {round_no}")
            return [slot[r] for r in range(self.size)]

    def abort(self) -> None:
        with self.changed:
            self.broken = True
            self.changed.notify_all()

    def for_rank(self, rank: int) -> RankComm:
        return RankComm(self, rank)


class RankComm:
    def __init__(self, shared: ThreadComm, rank: int):
        self.shared, self.rank, self.rounds = shared, rank, 0

    def all_gather(self, value: np.ndarray) -> list[np.ndarray]:
        self.rounds += 1
        return self.shared.exchange(self.rank, self.rounds, value)

    def gather_rows(self, row: list[float]) -> np.ndarray:
        return np.stack(self.all_gather(np.array(row, dtype=np.float64)))

    def barrier(self) -> None:
        self.all_gather(np.zeros(1))


class NumpyEngine(Engine):
    framework = "numpy"
    backend = "threads"
    device = "cpu"
    versions: ClassVar[dict] = {"numpy": np.__version__}

    def __init__(
        self, config: Config, world: World, comm: RankComm, nan_at_step: int | None = None, work: dict | None = None
    ):
        data = load_dataset("synthetic", None, config.data.limit, config.train.seed)
        self.images = data.train_images.reshape(len(data.train_images), -1).astype(np.float64) / 255
        self.labels, self.n_train = data.train_labels.astype(np.int64), len(data.train_images)
        self.data_info = data.info()
        self.test_images = data.test_images.reshape(len(data.test_images), -1).astype(np.float64) / 255
        self.test_labels = data.test_labels.astype(np.int64)
        self.world, self.comm, self.nan_at_step = world, comm, nan_at_step
        self.batch_per_rank = config.train.batch_size * config.train.accumulate_steps
        self.lr = config.scaled_lr(world.size)
        self.weights = np.zeros((self.images.shape[1], 10))
        self.outputs, self.steps = [0.0, 0.0], 0
        self.work = (work or {}).get(world.rank, 1)  # rank -> times it computes each gradient: > 1, a straggler
        self.timings = [0.0, 0.0]  # compute, collective seconds since take_timings

    def start_epoch(self, indices: np.ndarray) -> None:
        self.indices = indices

    def _loss(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = x @ self.weights
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return -np.log(p[np.arange(len(y)), y] + 1e-12), p

    def train_step(self, batch: int) -> int:
        started = time.perf_counter()
        take = self.indices[batch * self.batch_per_rank : (batch + 1) * self.batch_per_rank]
        x, y = self.images[take], self.labels[take]
        for _ in range(self.work):
            losses, p = self._loss(x, y)
            local = x.T @ (p - np.eye(10)[y]) / len(y)
        correct = float((p.argmax(1) == y).sum())
        ready = time.perf_counter()
        grad = np.mean(self.comm.all_gather(local), axis=0)  # averaged over ranks, as DDP does
        reduced = time.perf_counter()
        self.weights -= self.lr * grad
        self.timings[0] += ready - started + time.perf_counter() - reduced
        self.timings[1] += reduced - ready
        self.steps += 1
        nan = self.nan_at_step is not None and self.steps >= self.nan_at_step
        self.outputs[0] += float("nan") if nan else float(losses.sum())
        self.outputs[1] += correct
        return len(take)

    def take_outputs(self) -> tuple[float, float]:
        out, self.outputs = tuple(self.outputs), [0.0, 0.0]
        return out

    def take_timings(self) -> tuple[float, float]:
        out, self.timings = tuple(self.timings), [0.0, 0.0]
        return out

    def sync(self) -> None:
        pass

    def evaluate(self, rank: int, size: int) -> tuple[float, float, int]:
        x, y = self.test_images[rank::size], self.test_labels[rank::size]
        losses, p = self._loss(x, y)
        return float(losses.sum()), float((p.argmax(1) == y).sum()), len(y)

    def save_checkpoint(self, folder: Path, step: int, progress: dict) -> None:
        if self.world.is_chief:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"np-{step}.json").write_text(
                json.dumps({"weights": self.weights.tolist(), "progress": progress})
            )
        self.comm.barrier()

    def restore_checkpoint(self, path: Path, lr: float) -> dict:
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise DamagedCheckpoint(f"{path}: not readable ({exc})") from None
        self.weights, self.lr = np.array(state["weights"]), lr
        return state["progress"]

    def save_model(self, run_dir: Path) -> Path:
        path = run_dir / ROW.model_file
        np.save(path, self.weights)
        return path


N, BATCH = 1000, 32  # 1000 is not divisible by 3: the dropped tail is exercised too


def loop_config(tmp_path: Path, *overrides: str) -> Config:
    """A short run of the numpy engine in tmp_path: N synthetic samples, batch BATCH, 2 epochs."""
    base = ["data.dataset=synthetic", f"data.limit={N}", f"train.batch_size={BATCH}", "train.epochs=2"]
    return load_config(None, [*base, "log.progress=never", f"log.dir={tmp_path}", *overrides])


def run_ranks(config: Config, size: int, **engine_options) -> list[int | BaseException]:
    """The loop on `size` thread ranks; each rank's exit code, or the exception it raised."""
    shared, results = ThreadComm(size), [None] * size

    def rank(r: int) -> None:
        world = World(rank=r, size=size, local_rank=r, local_size=size, source="threads")
        try:
            results[r] = loop.train(config, world, NumpyEngine(config, world, shared.for_rank(r), **engine_options))
        except BaseException as exc:
            results[r] = exc
            shared.abort()  # the other ranks stop waiting for this one

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results
