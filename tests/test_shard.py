"""Sharding: equal, disjoint, covering, new every epoch, deterministic, batch-equivalent."""

import numpy as np
import pytest

from launch.data.shard import shard_indices, steps_per_epoch
from launch.errors import DataError


@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("n", [60000, 1001, 97])
def test_shards_are_equal_disjoint_and_cover(world, n):
    shards = [shard_indices(n, r, world, epoch=3, seed=11) for r in range(world)]
    lengths = {len(s.indices) for s in shards}
    assert lengths == {n // world}
    union = np.concatenate([s.indices for s in shards])
    assert len(np.unique(union)) == len(union)  # disjoint
    assert set(union) <= set(range(n))
    assert shards[0].dropped == n - len(union) == n % world
    assert shards[0].dropped <= world - 1


def test_not_divisible_drops_fewer_than_world():
    shards = [shard_indices(10, r, 4, epoch=0, seed=0) for r in range(4)]
    assert [len(s.indices) for s in shards] == [2, 2, 2, 2] and shards[0].dropped == 2


def test_deterministic_and_new_each_epoch():
    a = shard_indices(1000, 1, 4, epoch=2, seed=5).indices
    np.testing.assert_array_equal(a, shard_indices(1000, 1, 4, epoch=2, seed=5).indices)
    assert not np.array_equal(a, shard_indices(1000, 1, 4, epoch=3, seed=5).indices)
    assert not np.array_equal(a, shard_indices(1000, 1, 4, epoch=2, seed=6).indices)


def test_every_sample_seen_across_epochs():
    seen = set()
    for epoch in range(10):
        for r in range(3):
            seen |= set(shard_indices(100, r, 3, epoch=epoch, seed=0).indices.tolist())
    assert seen == set(range(100))  # the dropped sample changes with the epoch


def test_no_shuffle_is_dataset_order():
    np.testing.assert_array_equal(shard_indices(10, 1, 2, epoch=4, seed=0, shuffle=False).indices, [1, 3, 5, 7, 9])


@pytest.mark.parametrize("world", [2, 3, 4])
def test_batches_of_w_workers_equal_one_big_batch(world):
    """Batch i on every rank together is batch i of one worker with a world-times larger batch."""
    n, batch = 1200, 8
    single = shard_indices(n, 0, 1, epoch=1, seed=9).indices
    for i in range(5):
        together = np.concatenate(
            [shard_indices(n, r, world, epoch=1, seed=9).indices[i * batch : (i + 1) * batch] for r in range(world)]
        )
        np.testing.assert_array_equal(np.sort(together), np.sort(single[i * batch * world : (i + 1) * batch * world]))


def test_world_larger_than_dataset():
    with pytest.raises(DataError, match="world size 8 is larger than the training set \\(5 samples\\)"):
        shard_indices(5, 0, 8, epoch=0, seed=0)


def test_steps_per_epoch_counts_short_last_batch():
    assert steps_per_epoch(100, 32) == 4 and steps_per_epoch(96, 32) == 3


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2), (2, 3), (3, 2), (4, 4)])
@pytest.mark.parametrize("n,batch,steps", [(1000, 32, 5), (1001, 7, 13), (97, 4, 1)])
def test_a_resume_on_another_world_size_deals_the_rest_of_the_epoch(before, after, n, batch, steps):
    """k steps of W workers consumed positions [0, k*B*W); W' workers take the rest, once each."""
    first = [shard_indices(n, r, before, epoch=2, seed=3).indices[: steps * batch] for r in range(before)]
    position = steps * batch * before
    second = [shard_indices(n, r, after, epoch=2, seed=3, start=position) for r in range(after)]
    trained = np.concatenate(first + [s.indices for s in second])
    assert len(np.unique(trained)) == len(trained)  # nothing twice
    assert second[0].dropped == (n - position) % after == n - len(trained) < after  # all but < W' samples
    assert {len(s.indices) for s in second} == {(n - position) // after}  # equal shards: no rank waits


def test_a_finished_epoch_deals_nothing():
    assert [len(shard_indices(10, r, 3, epoch=0, seed=0, start=10).indices) for r in range(3)] == [0, 0, 0]
