"""Which rank holds the others back (launch.run.stragglers): the watch's rule on made-up intervals, then
the real loop on thread ranks (tests/numpy_engine.py), one of which computes each gradient many
times over. Ranks alike name nobody, and a rank slowed by a CPU cgroup is named, in real processes on
testbed hosts: test_multihost.py (thread ranks share one interpreter, too noisy to stay alike)."""

import math

import numpy as np
import pytest

from launch.run.comm import Rows
from launch.run.loop import INTERVAL_ROW
from launch.run.stragglers import StragglerWatch, split

from helpers import read_json, read_scalars
from numpy_engine import loop_config, register, run_ranks


def interval(compute_ms, collective_ms, data_ms=(1.0, 1.0, 1.0), steps=10):
    """Rows of one interval of len(compute_ms) ranks, from per-step milliseconds."""
    n = len(compute_ms)
    columns = {name: np.zeros(n) for name in INTERVAL_ROW}
    columns["steps"] = np.full(n, steps)
    for name, per_step in (("compute", compute_ms), ("collective", collective_ms), ("data", data_ms[:n])):
        columns[name] = np.array(per_step) * steps / 1000
    return Rows(tuple(columns), np.stack(list(columns.values()), axis=1))


HOSTS = ["node1", "node2", "node3"]


def test_a_rank_that_stays_slow_is_named_once_with_its_host_and_numbers():
    watch = StragglerWatch(0.5, HOSTS)
    slow = interval([10.0, 40.0, 11.0], [31.0, 1.0, 30.0])
    assert watch.observe(slow) == [] and watch.observe(slow) == []  # not yet: 3 intervals in a row
    (line,) = watch.observe(slow)
    assert line.startswith("rank 1 on node2 holds the others back: its own work takes 41.0 ms a step")
    assert "(compute 40.0, data 1.0), 3.6x the other ranks' median of 11.5 ms" in line
    assert "the others wait 30.5 ms a step in the collective" in line
    assert watch.observe(slow) == []  # named once, while it stays slow
    watch.observe(interval([10.0, 11.0, 10.0], [1.0, 1.0, 1.0]))  # recovered
    assert [watch.observe(slow) for _ in range(3)][-1][0].startswith("rank 1 on node2")  # slow again: named again


@pytest.mark.parametrize(
    "compute",
    [
        [10.0, 14.0, 11.0],  # 1.3x: under the threshold
        [10.0, 10.5, 9.8],
    ],
)
def test_ranks_within_the_threshold_are_not_named(compute):
    watch = StragglerWatch(0.5, HOSTS)
    assert not any(watch.observe(interval(compute, [1.0, 1.0, 1.0])) for _ in range(5))


def test_one_noisy_interval_names_nobody():
    watch = StragglerWatch(0.5, HOSTS)
    quiet, noisy = interval([10.0, 10.0, 10.0], [1.0] * 3), interval([10.0, 50.0, 10.0], [40.0, 1.0, 40.0])
    assert not any(watch.observe(rows) for rows in (noisy, quiet, noisy, noisy, quiet, noisy))


def test_an_engine_without_a_split_counts_its_steps_as_compute():
    assert split(0.5, 1.5, 1.2, 0.2) == (1.2, 0.2, pytest.approx(0.6))  # the shard, and the step's rest
    compute, collective, data = split(0.5, 1.5, math.nan, math.nan)
    assert (compute, data) == (1.5, 0.5) and math.isnan(collective)


@pytest.fixture
def numpy_framework(monkeypatch):
    register(monkeypatch)


def config(tmp_path):
    """About 30 steps an epoch per rank, logged every 10: intervals long enough to outweigh threads' noise."""
    return loop_config(tmp_path, "log.run_name=r", "log.interval=10", "data.limit=6000", "train.batch_size=64")


def test_the_loop_names_the_slow_rank_and_logs_every_rank_s_split(numpy_framework, tmp_path, caplog):
    assert run_ranks(config(tmp_path), 3, work={2: 50}) == [0, 0, 0]
    named = [r.getMessage() for r in caplog.records if "holds the others back" in r.getMessage()]
    assert len(named) == 1 and named[0].startswith("rank 2 on "), named
    ranks = read_json(tmp_path / "r" / "summary.json")["ranks"]
    assert ranks[2]["compute_ms"] > 2 * max(ranks[0]["compute_ms"], ranks[1]["compute_ms"])
    assert min(ranks[0]["collective_ms"], ranks[1]["collective_ms"]) > ranks[2]["collective_ms"]  # it waits least
    for r in range(3):  # one TensorBoard run per rank, the same tags: TensorBoard overlays them
        scalars = read_scalars(tmp_path / "r" / "ranks" / f"rank{r}")
        assert set(scalars) == {"rank/images_per_sec", "rank/compute_ms", "rank/collective_ms", "rank/data_ms"}
