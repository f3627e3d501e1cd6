"""Which samples each rank trains on in each epoch.

Every epoch draws one permutation of the whole training set from (seed, epoch), the same on every
rank, and deals it out like cards: rank r takes positions r, r+W, r+2W, ... Shards are disjoint and
of equal length (so no rank waits for a batch the others never send), their union covers all but the
`n mod W` (< W) samples at the end of the permutation, and a new epoch always means a new order:
the forgotten `set_epoch` bug cannot happen. Dealing rather than cutting in blocks means batch i of
W workers holds exactly the samples of batch i of one worker with a W-times larger batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from launch.errors import DataError


@dataclass(frozen=True)
class Shard:
    indices: np.ndarray  # int64 positions into the training set, in training order
    dropped: int  # samples no rank sees this epoch (the same count every epoch)


def epoch_permutation(n: int, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def shard_indices(n: int, rank: int, world_size: int, epoch: int, seed: int, shuffle: bool = True) -> Shard:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    per_rank = shard_size(n, world_size)
    order = epoch_permutation(n, epoch, seed, shuffle)
    used = per_rank * world_size
    return Shard(indices=order[rank:used:world_size], dropped=n - used)


def shard_size(n: int, world_size: int) -> int:
    """Samples per rank per epoch; a world larger than the dataset is an error."""
    if n < world_size:
        raise DataError(f"world size {world_size} is larger than the training set ({n} samples): "
                        "use fewer workers or a larger data.limit")
    return n // world_size


def steps_per_epoch(shard_size: int, batch_size: int) -> int:
    """Batches per epoch; the last one may be short (every rank has the same count)."""
    return -(-shard_size // batch_size)
