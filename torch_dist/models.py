"""The two models, defined once for PyTorch with the same shapes and initialisation as tf_dist's.

Keras initialises Dense and Conv2D kernels Glorot-uniform and biases to zero; PyTorch's defaults
differ (Kaiming-uniform, uniform bias), so they are set here to compare the frameworks fairly.
Inputs are uint8-scaled floats of shape (N, 28, 28).
"""

from __future__ import annotations

from torch import nn


def build_model(name: str) -> nn.Module:
    if name == "mlp":
        # The classic Keras MNIST example: Flatten -> Dense 128 relu -> Dense 10.
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    elif name == "cnn":
        # Keras' simple MNIST convnet without dropout: 28 -> 26 -> 13 -> 11 -> 5; 64*5*5 features.
        model = nn.Sequential(
            nn.Unflatten(1, (1, 28)),  # (N, 28, 28) -> (N, 1, 28, 28)
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 10),
        )
    else:
        raise ValueError(f"unknown model {name!r}")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model
