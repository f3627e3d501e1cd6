"""tf.distribute plumbing: threads and devices (before TensorFlow starts), the strategy, small collectives.

Strategy for `dist.strategy=auto`: several processes -> MultiWorkerMirroredStrategy with TF_CONFIG
built from launch's world; one process with several GPUs (or `dist.cpu_devices` > 1 logical CPUs)
-> MirroredStrategy; one device -> the default strategy.
"""

from __future__ import annotations

import json
import os

import numpy as np

from launch.cluster import rendezvous
from launch.cluster.devices import gpu_for_rank
from launch.cluster.world import World, tf_config, worker_addresses
from launch.run.comm import GatheringBarrier
from tf_dist.quiet import tf

# Not in TensorFlow's public API: the strategy configures the coordination service only when
# nobody has (collective_all_reduce_strategy.py), with fixed timeouts.
from tensorflow.python.distribute import multi_worker_util  # isort: skip
from tensorflow.python.eager import context  # isort: skip


def configure_devices(threads: int, world: World, cpu_devices: int) -> list:
    """Threads, GPU visibility and logical CPUs: TensorFlow accepts these only before it starts."""
    # train.threads is what a worker uses: a second inter-op thread lets one worker spill onto a core
    # that another worker was given, which makes multi-worker efficiency look worse than it is
    # (benchmarks/tf_profile.py). Collectives are asynchronous kernels and need no spare thread;
    # several replicas in one process keep two, to run side by side.
    inter = threads if cpu_devices == 1 else max(2, threads)
    if (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    ) != (threads, inter):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    gpus = tf.config.list_physical_devices("GPU")
    if world.size > 1 and gpus:  # one GPU per worker process (launch.cluster.devices)
        gpus = [gpus[gpu_for_rank(len(gpus), world.local_rank, world.local_size)]]
        tf.config.set_visible_devices(gpus, "GPU")
    if not gpus and cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    return gpus


def make_strategy(config, world: World, gpus: list) -> tf.distribute.Strategy:
    """The strategy dist.strategy asks for (launch.frameworks checked that it fits the world)."""
    requested = config.dist.strategy
    if requested == "auto":
        local_devices = len(gpus) or config.dist.cpu_devices
        requested = "multi-worker" if world.size > 1 else "mirrored" if local_devices > 1 else "default"
    if requested == "multi-worker":
        if not json.loads(os.environ.get("TF_CONFIG") or "{}").get("task"):
            # TF_CONFIG given whole (it agrees with the world: launch.cluster.world checked) stays as it is.
            os.environ["TF_CONFIG"] = json.dumps(tf_config(world))
        options = communication_options(config.dist.backend, len(gpus), config.dist.bucket_mb)
        _configure_coordination(config.dist.timeout)
        chief, port = worker_addresses(world)[0].rsplit(":", 1)
        rendezvous.check_master(world, chief, int(port), config.dist.timeout)
        # TensorFlow's chief waits for missing workers without a bound: the deadline ends it.
        with rendezvous.deadline(world, chief, int(port), config.dist.timeout):
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        if strategy.num_replicas_in_sync == world.size:
            # One replica per worker, and launch.data.shard gives every worker as many batches: the
            # distributed iterator's check that all workers still have data (an extra all-reduce in
            # every step: benchmarks/tf_profile.py measures its cost) is not needed.
            strategy.extended.experimental_enable_get_next_as_optional = False
        return strategy
    if requested == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.get_strategy()


def collective(strategy: tf.distribute.Strategy, backend: str, on_gpu: bool) -> str:
    """How the gradients are all-reduced, in the vocabulary torch_dist's backends share (summary.json,
    HParams): none with one replica; between workers TensorFlow's ring (over gRPC) or nccl; inside
    one process, nccl between GPUs and reduce-to-one between CPU devices (make_strategy)."""
    if strategy.num_replicas_in_sync == 1:
        return "none"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "ring" if _ring(backend, on_gpu) else "nccl"
    return "nccl" if on_gpu else "reduce-to-one"


def _ring(backend: str, gpus: int) -> bool:
    """gloo asked for, or left to auto without GPUs: TensorFlow's own ring."""
    return backend == "gloo" or (backend == "auto" and not gpus)


def communication_options(backend: str, gpus: int, bucket_mb: float):
    """How the workers of MultiWorkerMirroredStrategy all-reduce, gradients packed into all-reduces
    of dist.bucket_mb. Between GPUs NCCL unless gloo was asked for: TensorFlow picks NCCL only when
    asked, else every gradient goes GPU -> host -> gRPC ring. No per-collective timeout: TensorFlow
    starts a thread for each collective given one (its documentation: for debugging only); a worker
    gone silent is found by the coordination service's heartbeat (dist.timeout)."""
    implementations = tf.distribute.experimental.CommunicationImplementation
    return tf.distribute.experimental.CommunicationOptions(
        implementation=implementations.RING if _ring(backend, gpus) else implementations.NCCL,
        bytes_per_pack=int(bucket_mb * 2**20),
    )


def _configure_coordination(timeout: int) -> None:
    """TensorFlow's coordination service as MultiWorkerMirroredStrategy sets it up, with
    dist.timeout as the time a task may go silent before the others count it as crashed.

    TensorFlow's default is 10 s, and its tasks leave without telling the service: a worker that
    exits more than 10 s before the chief (or after it) is logged as crashed after a clean finish.
    A task that really dies is still found at once, by its closed connections.
    """
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        heartbeat_timeout_in_ms=timeout * 1000,
        coordinated_jobs=[
            # the proto module context imports: tensorflow.tsl in 2.16, tensorflow.compiler.xla.tsl in 2.21
            context.coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker")
            if job in cluster.jobs
        ],
    )


def wait_for_every_worker(world: World, timeout: int) -> None:
    """Before a worker exits. A collective returns on a worker before its peers have fetched that
    worker's part (they pull it over gRPC), so a worker that left right after the last one would
    close a connection a peer still reads from. The coordination service's barrier returns once
    every worker has arrived, that is, once every worker is done with its collectives.

    The leader serves the barrier and leaves once it is complete, sometimes before another worker's
    answer has gone out: that worker then finds the service gone (UnavailableError), which after
    this barrier means every worker arrived. A leader that failed before says so by its own exit."""
    if world.size == 1:
        return
    try:
        context.context().wait_at_barrier("mnist-dist/leave", timeout * 1000)
    except tf.errors.UnavailableError:
        if _is_coordination_leader():
            raise


def _is_coordination_leader() -> bool:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
    return me == multi_worker_util.coordination_leader(resolver.cluster_spec())


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi-worker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "default"


class Comm(GatheringBarrier):
    """The loop's collectives (launch.run.comm.Communicator) under a strategy: each replica contributes
    its worker's row, and one per worker is kept."""

    def __init__(self, strategy: tf.distribute.Strategy, world_size: int):
        self.world_size = world_size
        # Compiled, so that gathering under MultiWorkerMirroredStrategy is not an eager collective;
        # once for rows of any length (the loop gathers several), not traced again for each.
        self.gather_fn = tf.function(
            lambda row: strategy.gather(strategy.run(tf.identity, args=(row,)), axis=0),
            input_signature=[tf.TensorSpec([1, None], tf.float64)],
        )

    def gather_rows(self, row: list[float]) -> np.ndarray:
        mine = tf.constant([row], dtype=tf.float64)
        if self.world_size == 1:
            return mine.numpy()
        return self.gather_fn(mine).numpy().reshape(self.world_size, -1, len(row))[:, 0]
