"""Where training stands, as a checkpoint records it.

Progress is counted so that a run can continue on another number of workers (launch.data.shard):
`step` counts optimizer steps across the whole run, whatever the world size was when each was
taken (the x axis of TensorBoard); `sample` counts the positions of the current epoch's permutation
already trained, by all ranks together. A checkpoint holds both, and the world-size history: which
steps ran on how many workers, at which global batch and learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from launch.config import TrainConfig
from launch.run.comm import Rows
from launch.run.records import EpochRecord, history_from_dicts, history_to_dicts


@dataclass
class EpochSums:
    """This epoch's training so far, all ranks together: what its train loss and accuracy come from."""

    images: float = 0.0
    loss_sum: float = 0.0
    correct: float = 0.0

    def add(self, rows: Rows) -> None:
        self.images += rows.total("images")
        self.loss_sum += rows.total("loss_sum")
        self.correct += rows.total("correct")

    def to_list(self) -> list[float]:
        return [self.images, self.loss_sum, self.correct]  # a checkpoint's "epoch_sums", in this order


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0
    sample: int = 0
    sums: EpochSums = field(default_factory=EpochSums)
    history: list[EpochRecord] = field(default_factory=list)
    world_sizes: list[dict] = field(default_factory=list)  # one per start of the run: its world size and steps

    def start(self, world_size: int, global_batch: int, lr: float) -> None:
        """Record a start (a new run, or a resume) at this world size."""
        self.world_sizes.append(
            {
                "world_size": world_size,
                "global_batch_size": global_batch,
                "lr": lr,
                "steps": [self.step, self.step],
                "epoch": self.epoch,
                "sample": self.sample,
            }
        )

    def world_size_history(self) -> list[dict]:
        """Every start's world size and steps, this start's up to the current step."""
        self.world_sizes[-1]["steps"][1] = self.step
        return self.world_sizes

    def done(self, train: TrainConfig) -> bool:
        return self.epoch >= train.epochs or (train.max_steps is not None and self.step >= train.max_steps)

    def to_dict(self, run: dict) -> dict:
        """What a checkpoint records, for the run `run` (launch.run.resume.RunIdentity.to_dict)."""
        return {
            "run": run,
            "epoch": self.epoch,
            "step": self.step,
            "sample": self.sample,
            "epoch_sums": self.sums.to_list(),
            "history": history_to_dicts(self.history),
            "world_size_history": self.world_size_history(),
        }

    @classmethod
    def from_dict(cls, state: dict) -> Progress:
        return cls(
            epoch=state["epoch"],
            step=state["step"],
            sample=state["sample"],
            sums=EpochSums(*state["epoch_sums"]),
            history=history_from_dicts(state["history"]),
            world_sizes=state["world_size_history"],
        )
