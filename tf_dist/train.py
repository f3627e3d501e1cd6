"""TensorFlow data-parallel MNIST training: `python -m tf_dist.train --config configs/mlp.yaml [key=value ...]`.

One process mirrors over its local devices; several processes (torchrun-style environment, mpirun,
srun) form a MultiWorkerMirroredStrategy. Keras 3's `model.fit` fails under that strategy
(keras-team/keras#20585), so every strategy runs the same custom step: a `tf.function` that calls
`strategy.run`, with the loss averaged over the global batch. The loop itself is launch.run.loop's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from launch.cluster.cpus import threads_per_worker
from launch.cluster.devices import require_usable_gpus
from launch.cluster.world import World
from launch.frameworks import FRAMEWORKS, Placement, check
from launch.run import loop, worker
from launch.run.engine import EVAL_BATCH, Engine, load_data
from tf_dist import distributed
from tf_dist.checkpoint import Checkpoints
from tf_dist.models import build_model
from tf_dist.quiet import keras, tf

PROG = "tf_dist.train"
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def main(argv: list[str] | None = None) -> None:
    worker.main(PROG, train, argv)


def build(config, world: World) -> TFEngine:
    """This rank's devices, strategy and engine, ready for the loop."""
    gpus = distributed.configure_devices(threads_per_worker(config, world), world, config.dist.cpu_devices)
    require_usable_gpus(len(gpus), FRAMEWORKS["tf"].cuda_build)
    set_tf32(config.train.tf32)
    check(config, "tf", Placement(workers=world.size, gpus_per_node=len(gpus)))
    strategy = distributed.make_strategy(config, world, gpus)
    return TFEngine(config, world, strategy, "gpu" if gpus else "cpu")


def train(config, world: World) -> int:
    """Train on this rank; the exit code: 0, or loop.PREEMPTED after a requested stop."""
    code = loop.train(config, world, build(config, world))
    distributed.wait_for_every_worker(world, config.dist.timeout)
    return code


class TFEngine(Engine):
    framework = "tf"

    def __init__(self, config, world: World, strategy: tf.distribute.Strategy, device: str):
        self.config, self.world, self.strategy, self.device = config, world, strategy, device
        self.backend = distributed.collective(strategy, config.dist.backend, on_gpu=device == "gpu")
        self.versions = {"tensorflow": tf.__version__, "keras": keras.__version__, **_gpu_versions(device)}
        data = load_data(config)
        self.n_train, self.data_info = len(data.train_images), data.info()
        self.images, self.labels = tf.constant(data.train_images), tf.constant(data.train_labels.astype(np.int64))
        self.test_images, self.test_labels = data.test_images, data.test_labels.astype(np.int64)
        # train.batch_size is per replica (one replica per process in torch_dist); a worker's step
        # takes one batch for each of its local replicas.
        # With train.accumulate_steps k, a replica's batch holds k micro-batches of batch_size.
        self.accumulate = config.train.accumulate_steps
        self.batch = config.train.batch_size * self.accumulate
        self.batch_per_rank = self.batch * strategy.num_replicas_in_sync // world.size

        keras.mixed_precision.set_global_policy(_POLICIES[config.train.precision])
        keras.utils.set_random_seed(config.train.seed)  # the same initial weights on every worker
        with strategy.scope():
            self.model = build_model(config.model.name)
            lr = config.scaled_lr(world.size)
            if config.train.optimizer == "sgd":
                optimizer = keras.optimizers.SGD(lr, momentum=config.train.momentum)
            else:
                optimizer = keras.optimizers.Adam(lr)
            if config.train.precision == "fp16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)  # its variables, mirrored, before the first step
            self.optimizer = optimizer
        self.checkpoints = Checkpoints(self.model, self.optimizer, config.model.name)
        self.step_fn = self._make_step()
        self.comm = distributed.Comm(strategy, world.size)
        self.eval_fn = tf.function(self._eval_batch)
        self.outputs: list[tuple[tf.Tensor, tf.Tensor]] = []
        self.timings: list[tf.Tensor] = []  # per step: seconds computing, and in the all-reduce and update

    def _make_step(self):
        model, optimizer, strategy, k = self.model, self.optimizer, self.strategy, self.accumulate
        scale_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica_step(x, y):
            # Timestamps as sequence points: the step's work waits for each, so that each marks a
            # boundary (the batch here; gradients computed; all-reduced and applied).
            with tf.control_dependencies([x, y]):
                started = tf.timestamp()
            with tf.control_dependencies([started]):
                x = tf.cast(x, tf.float32) / 255.0
            n = tf.shape(y)[0]
            # Divided by the global batch (this replica's batch x replicas): the all-reduce sums.
            global_batch = n * strategy.num_replicas_in_sync
            grads, loss_sum, correct = None, 0.0, 0.0
            for j in range(k):  # k micro-batches' gradients summed locally; one all-reduce in apply_gradients
                part = slice(n * j // k, n * (j + 1) // k)
                with tf.GradientTape() as tape:
                    logits = model(x[part], training=True)
                    per_example = keras.losses.sparse_categorical_crossentropy(y[part], logits, from_logits=True)
                    loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                    scaled = optimizer.scale_loss(loss) if scale_loss else loss
                part_grads = tape.gradient(scaled, model.trainable_variables)
                grads = part_grads if grads is None else [a + b for a, b in zip(grads, part_grads)]
                loss_sum += tf.reduce_sum(per_example)
                correct += tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y[part]), tf.float32))
            with tf.control_dependencies(grads):
                ready = tf.timestamp()
            with tf.control_dependencies([ready]):
                grads = [tf.identity(g) for g in grads]
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # all-reduce, then update
            with tf.control_dependencies([tf.identity(v.value) for v in model.trainable_variables]):
                reduced = tf.timestamp()
            return loss_sum, correct, n, tf.stack([ready - started, reduced - ready])

        @tf.function
        def step(batches):
            # next() inside the compiled step: the distributed iterator costs no Python per step.
            loss_sum, correct, sizes, timing = strategy.run(replica_step, args=next(batches))
            local = strategy.experimental_local_results
            # Local sums only: no extra collective per step. The batch sizes stay per replica; the
            # process's compute and collective seconds are its slowest replica's.
            timing = tf.reduce_max(tf.stack(local(timing)), axis=0)
            return tf.add_n(local(loss_sum)), tf.add_n(local(correct)), tf.stack(local(sizes)), timing

        return step

    def start_epoch(self, indices: np.ndarray) -> None:
        # This epoch's shard gathered once (as torch_dist does), then sliced into per-replica
        # batches: no rebatching and no autosharding (the shard is already this worker's); local
        # replicas take consecutive batches, so batch i of this worker is the i-th slice of
        # batch_per_rank. (A per-batch tf.gather in a map is slower.)
        self.epoch_size = len(indices)
        images, labels = tf.gather(self.images, indices), tf.gather(self.labels, indices)

        def replica_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return tf.data.Dataset.from_tensor_slices((images, labels)).batch(self.batch).prefetch(tf.data.AUTOTUNE)

        self.batches = iter(self.strategy.distribute_datasets_from_function(replica_batches))

    def train_step(self, batch: int) -> int:
        loss_sum, correct, _replica_batch_sizes, timing = self.step_fn(self.batches)
        self.outputs.append((loss_sum, correct))
        self.timings.append(timing)
        return min(self.batch_per_rank, self.epoch_size - batch * self.batch_per_rank)

    def take_outputs(self) -> tuple[float, float]:
        losses, corrects = zip(*self.outputs)
        self.outputs = []
        return float(tf.add_n(losses).numpy()), float(tf.add_n(corrects).numpy())

    def take_timings(self) -> tuple[float, float]:
        """Host timestamps inside the step (on a GPU the host runs ahead of the device: approximate)."""
        compute, collective = tf.add_n(self.timings).numpy()
        self.timings = []
        return float(compute), float(collective)

    def sync(self) -> None:
        if self.device == "gpu":
            tf.test.experimental.sync_devices()

    def _eval_batch(self, x, y):
        logits = tf.cast(self.model(tf.cast(x, tf.float32) / 255.0, training=False), tf.float32)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32))
        return tf.reduce_sum(loss), correct

    def evaluate(self, rank: int, size: int) -> tuple[float, float, int]:
        x_all, y_all = self.test_images[rank::size], self.test_labels[rank::size]
        loss_sum = correct = 0.0
        for start in range(0, len(x_all), EVAL_BATCH):
            loss, right = self.eval_fn(x_all[start : start + EVAL_BATCH], y_all[start : start + EVAL_BATCH])
            loss_sum, correct = loss_sum + float(loss), correct + float(right)
        return loss_sum, correct, len(x_all)

    def save_checkpoint(self, folder: Path, step: int, progress: dict) -> None:
        self.checkpoints.save(folder, step, self.world.is_chief, progress)

    def restore_checkpoint(self, path: Path, lr: float) -> dict:
        progress = self.checkpoints.restore(path)
        # The checkpoint restored the optimizer's learning rate too: maybe another world size's.
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)  # under a LossScaleOptimizer
        inner.learning_rate = lr
        return progress

    def save_model(self, run_dir: Path) -> Path:
        path = run_dir / FRAMEWORKS["tf"].model_file
        self.model.save(path)
        return path


def set_tf32(enabled: bool) -> None:
    """train.tf32 (TensorFlow's default: on)."""
    tf.config.experimental.enable_tensor_float_32_execution(enabled)


def _gpu_versions(device: str) -> dict:
    if device != "gpu":
        return {}
    details = tf.config.experimental.get_device_details(tf.config.get_visible_devices("GPU")[0])
    return {"gpu": details.get("device_name", "?"), "cuda": tf.sysconfig.get_build_info().get("cuda_version", "?")}


if __name__ == "__main__":
    main()
