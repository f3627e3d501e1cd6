"""`mnist-dist doctor`'s TensorFlow part, `python -m tf_dist.doctor [--config FILE] [key=value ...]`,
started by the same launcher after torch_dist.doctor: the all-reduce sweep of launch.doctor.allreduce_sweep with
the collective tf_dist trains with (the strategy and communication options dist.* give it). Rank 0
writes doctor-tf.json to the doctor's folder (log.dir/log.run_name), where `mnist-dist doctor` adds
it to doctor.json.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from launch.atomic_files import write_json
from launch.cluster.cpus import threads_per_worker
from launch.cluster.world import World
from launch.doctor.allreduce_sweep import SIZES, bandwidth, times_to_run
from launch.doctor.findings import TF_REPORT
from launch.run import worker
from tf_dist import distributed
from tf_dist.quiet import tf

PROG = "tf_dist.doctor"


def main(argv: list[str] | None = None) -> None:
    worker.main(PROG, check, argv)


def check(config, world: World) -> int:
    gpus = distributed.configure_devices(threads_per_worker(config, world), world, config.dist.cpu_devices)
    strategy = distributed.make_strategy(config, world, gpus)
    comm = distributed.Comm(strategy, world.size)
    sync = tf.test.experimental.sync_devices if gpus else lambda: None
    rows = [_size(strategy, comm, nbytes, sync) for nbytes in SIZES]
    if world.is_chief:
        folder = Path(config.log.dir) / config.log.run_name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / TF_REPORT, {"strategy": distributed.strategy_name(strategy), "rows": rows})
    comm.barrier()
    distributed.wait_for_every_worker(world, config.dist.timeout)
    return 0


def _size(strategy, comm, nbytes: int, sync) -> dict:
    value = tf.ones([nbytes // 4], tf.float32)

    def replica_sum():
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)

    @tf.function  # named functions: AutoGraph cannot tell nested lambdas on one line apart, and warns
    def reduce():
        return strategy.run(replica_sum)

    _timed(reduce, sync)  # traces the function
    slowest = float(comm.gather_rows([_timed(reduce, sync)])[:, 0].max())
    times = [_timed(reduce, sync) for _ in range(times_to_run(slowest))]
    return bandwidth(nbytes, statistics.fmean(times), strategy.num_replicas_in_sync)


def _timed(reduce, sync) -> float:
    began = time.perf_counter()
    reduce()
    sync()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
