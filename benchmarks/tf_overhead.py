"""tf_dist's 1-worker throughput against a bare Keras `model.fit` and a bare `tf.function` loop with
the same model, batch and threads, measured in one process, interleaved.

    python benchmarks/tf_overhead.py [--model mlp|cnn] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import arguments, interleave, medians, report, summary_rate, temp_dir, trainer_config


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    import numpy as np

    from launch.cluster.world import World
    from launch.data.datasets import synthetic
    from tf_dist.distributed import configure_devices
    from tf_dist.models import build_model
    from tf_dist.quiet import keras, tf
    from tf_dist.train import train

    # Every loop gets tf_dist's threads; TensorFlow takes them only before it starts (the trainer's
    # own call then finds them set).
    configure_devices(args.threads, World(), cpu_devices=1)

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.precision == "bf16" else "float32")
    data = synthetic(seed=0)
    images, labels = data.train_images, data.train_labels.astype(np.int64)
    total = args.warmup + args.steps

    def dataset(repeat: bool = True) -> tf.data.Dataset:
        order = np.random.permutation(len(images))
        # uint8 batches, scaled inside the compiled step as tf_dist does
        batches = tf.data.Dataset.from_tensor_slices((images[order], labels[order])).batch(args.batch)
        return (batches.repeat() if repeat else batches).prefetch(tf.data.AUTOTUNE)

    def bare_function(r: int) -> float:
        model, optimizer = build_model(args.model), keras.optimizers.Adam(1e-3)

        @tf.function
        def step(batches):  # next() inside the function, as tf_dist does: the fastest bare loop
            x, y = next(batches)
            with tf.GradientTape() as tape:
                logits = model(tf.cast(x, tf.float32) / 255.0, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        per_epoch, i = len(images) // args.batch, 0  # full batches: next() must not run dry in the step
        while i < total:
            batches = iter(dataset(repeat=False))  # a new order every epoch, as tf_dist and torch's bare loop
            for _ in range(min(per_epoch, total - i)):
                if i == args.warmup:
                    start = time.perf_counter()
                loss = step(batches)
                i += 1
        loss.numpy()
        return args.steps * args.batch / (time.perf_counter() - start)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == args.warmup:
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.rate = args.steps * args.batch / (time.perf_counter() - self.start)

    def keras_fit(r: int) -> float:
        model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255), build_model(args.model)])
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        timer = Timer()
        model.fit(dataset(), steps_per_epoch=total, epochs=1, verbose=0, callbacks=[timer])
        return timer.rate

    log_dir = temp_dir()

    def trainer(r: int) -> float:
        train(trainer_config(args, log_dir, f"tf-{r}"), World())
        return summary_rate(Path(log_dir) / f"tf-{r}")

    results = interleave(
        {"keras model.fit": keras_fit, "bare tf.function loop": bare_function, "tf_dist": trainer}, args.repeats
    )
    faster = max(("keras model.fit", "bare tf.function loop"), key=lambda k: medians(results).get(k, 0.0))
    report(
        "tf_dist vs bare Keras loops (1 worker)",
        args,
        results,
        faster,
        f"tensorflow {tf.__version__}, keras {keras.__version__}",
    )


if __name__ == "__main__":
    main()
