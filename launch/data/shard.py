"""Which samples each rank trains on in each epoch.

Every epoch draws one permutation of the whole training set from (seed, epoch), the same on every
rank, and deals it out like cards: rank r takes positions r, r+W, r+2W, ... Shards are disjoint and
of equal length (so no rank waits for a batch the others never send), their union covers all but the
`n mod W` (< W) samples at the end of the permutation, and a new epoch always means a new order:
the forgotten `set_epoch` bug cannot happen. Dealing rather than cutting in blocks means batch i of
W workers holds exactly the samples of batch i of one worker with a W-times larger batch.

The training position is global: k full steps of W workers at batch B have consumed positions
[0, k*B*W) of the epoch's permutation, whatever W was. A run that resumes mid-epoch, with the same
or another number of workers, deals the rest of the permutation from there (`start`), so across the
two attempts every sample of that epoch is trained once.
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


def shard_indices(
    n: int, rank: int, world_size: int, epoch: int, seed: int, shuffle: bool = True, start: int = 0
) -> Shard:
    """This rank's part of the epoch's permutation from position `start` (0 unless resuming mid-epoch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of {world_size}")
    if not 0 <= start <= n:
        raise ValueError(f"start position {start} outside 0..{n}")
    shard_size(n, world_size)  # a world larger than the dataset is an error
    rest = epoch_permutation(n, epoch, seed, shuffle)[start:]
    used = len(rest) // world_size * world_size  # a finished epoch's empty rest deals nothing
    return Shard(indices=rest[rank:used:world_size], dropped=len(rest) - used)


def shard_size(n: int, world_size: int) -> int:
    """Samples per rank per epoch; a world larger than the dataset is an error."""
    if n < world_size:
        raise DataError(
            f"world size {world_size} is larger than the training set ({n} samples): "
            "use fewer workers or a larger data.limit"
        )
    return n // world_size


def steps_per_epoch(shard_size: int, batch_size: int) -> int:
    """Batches per epoch; the last one may be short (every rank has the same count)."""
    return -(-shard_size // batch_size)
