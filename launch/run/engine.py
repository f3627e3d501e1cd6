"""What a framework implements for the shared loop (launch.run.loop): `Engine`, its training step,
device and files; its collectives are a `launch.run.comm.Communicator`. torch_dist and tf_dist each
have one, and tests/numpy_engine.py is a whole one in numpy."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from launch.config import Config
from launch.data.datasets import Dataset, load_dataset
from launch.run.comm import Communicator

EVAL_BATCH = 1000  # test images a rank evaluates at once, in every framework


class Engine(ABC):
    """A framework's training step, its device and its files. All ranks call every method in the same
    order, since some are collectives; `save_model` is called on the chief only."""

    framework: str  # a key of launch.frameworks.FRAMEWORKS
    batch_per_rank: int  # images one rank takes per step (train.batch_size x accumulation x local replicas)
    backend: str  # the gradients' collective, shown in summary.json (launch.outputs.summary.Summary.backend)
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


def load_data(config: Config) -> Dataset:
    """The configured dataset, as every engine loads it (data.limit cuts it)."""
    data = config.data
    return load_dataset(data.dataset, data.dir, data.limit, config.train.seed, data.custom)
