"""The few collectives the training loop needs, whatever the framework: every rank's row of numbers,
and a barrier. torch_dist (DDP or Horovod) and tf_dist each implement `Communicator`.

Rows have named columns (`Rows`): the loop reads `rows["stop"]`, never a column number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Communicator(Protocol):
    def gather_rows(self, row: list[float]) -> np.ndarray:
        """Every rank's row of numbers as a (world size, len(row)) float64 array, on every rank."""

    def barrier(self) -> None:
        """Return once every rank has called it."""


class GatheringBarrier:
    """A barrier made of the gather: no rank's gather returns before every rank has sent its row."""

    def barrier(self) -> None:
        self.gather_rows([0.0])


@dataclass(frozen=True)
class Rows:
    """Every rank's values of the same named columns, one row per rank."""

    columns: tuple[str, ...]
    values: np.ndarray  # (world size, len(columns))

    def __getitem__(self, column: str) -> np.ndarray:
        return self.values[:, self.columns.index(column)]

    def total(self, column: str) -> float:
        return float(self[column].sum())

    def of_rank(self, rank: int) -> dict[str, float]:
        """One rank's row, by column."""
        return dict(zip(self.columns, (float(v) for v in self.values[rank])))


def gather(comm: Communicator, row: dict[str, float]) -> Rows:
    """Every rank's `row` (the same keys on every rank), gathered."""
    return Rows(tuple(row), comm.gather_rows([float(v) for v in row.values()]))


def gather_text(comm: Communicator, text: str, width: int = 64) -> list[str]:
    """Every rank's short text (a host name: at most 64 bytes on Linux), in rank order, on every rank:
    its UTF-8 bytes travel as a row of numbers, after their length."""
    data = text.encode()[:width]
    rows = comm.gather_rows([len(data), *data, *[0] * (width - len(data))])
    return [bytes(int(b) for b in row[1 : 1 + int(row[0])]).decode(errors="replace") for row in rows]
