"""The two models, defined once for Keras with the same shapes and initialisation as torch_dist's
(Keras defaults: Glorot-uniform kernels, zero biases). Inputs are scaled floats of shape (N, 28, 28).
The last layer computes in float32 under a mixed-precision policy, for a stable softmax loss.
"""

from __future__ import annotations

from tf_dist.quiet import keras

layers = keras.layers


def build_model(name: str) -> keras.Model:
    if name == "mlp":
        # The classic Keras MNIST example: Flatten -> Dense 128 relu -> Dense 10.
        body = [layers.Flatten(), layers.Dense(128, activation="relu")]
    elif name == "cnn":
        # Keras' simple MNIST convnet without dropout.
        body = [
            layers.Reshape((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
        ]
    else:
        raise ValueError(f"unknown model {name!r}")
    return keras.Sequential([keras.Input((28, 28)), *body, layers.Dense(10, dtype="float32")], name=name)
