"""What one training image costs each model: its parameters and floating-point operations, counted
once here for both frameworks (torch_dist.models and tf_dist.models build the same layers).

Counted as PyTorch's FlopCounterMode counts them: the matrix products and convolutions, two
operations per multiply-add, in the forward pass, the weights' gradients, and the inputs'
gradients of every layer but the first (nothing needs the image's gradient). Biases, activations,
pooling, the loss and the optimizer are left out: together under 2% of either model's operations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    multiply_adds: int  # per image, forward
    parameters: int


def dense(inputs: int, outputs: int) -> Layer:
    return Layer(inputs * outputs, inputs * outputs + outputs)


def conv(channels_in: int, channels_out: int, kernel: int, side_out: int) -> Layer:
    weights = channels_in * channels_out * kernel * kernel
    return Layer(weights * side_out * side_out, weights + channels_out)


LAYERS = {
    "mlp": (dense(784, 128), dense(128, 10)),
    "cnn": (conv(1, 32, 3, 26), conv(32, 64, 3, 11), dense(64 * 5 * 5, 10)),  # 28 -> 26 -> 13 -> 11 -> 5
}


def parameters(model: str) -> int:
    return sum(layer.parameters for layer in LAYERS[model])


def training_flops_per_image(model: str) -> int:
    """Forward, the weights' gradients, and the inputs' gradients after the first layer."""
    layers = LAYERS[model]
    forward = sum(2 * layer.multiply_adds for layer in layers)
    return 2 * forward + sum(2 * layer.multiply_adds for layer in layers[1:])
