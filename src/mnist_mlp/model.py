"""The multilayer perceptron of the lesson, every choice a constructor argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlplab.errors import ConfigError
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
INITS = ("he", "xavier", "default")


class MLP(nn.Module):
    """Fully connected network: Linear -> activation -> dropout per hidden layer, then outputs.

    Inputs of any shape (``(N, C, H, W)`` images, ``(N, F)`` tables) are flattened first.

    Args:
        input_shape: one example's shape, e.g. ``(1, 28, 28)``; filled in from the data.
        num_outputs: number of outputs (classes); filled in from the data.
        hidden_sizes: width of each hidden layer, e.g. ``[256, 128]``.
        activation: ``relu``, ``sigmoid`` or ``tanh``.
        dropout: dropout probability after each hidden activation (0 disables it).
        init: ``he`` (Kaiming normal, suited to ReLU), ``xavier`` (Glorot normal, suited to
            sigmoid/tanh) or ``default`` (PyTorch's own); ``he`` and ``xavier`` zero the biases.
        compile: compile the forward pass with ``torch.compile`` (on its first call). In place,
            so parameter names, and hence checkpoints, are the same as without it.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        init: str = "he",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation={activation!r} is not allowed: must be one of "
                f"{', '.join(ACTIVATIONS)}"
            )
        if init not in INITS:
            raise ConfigError(
                f"model.init={init!r} is not allowed: must be one of {', '.join(INITS)}"
            )
        if not all(isinstance(h, int) and h >= 1 for h in hidden_sizes):
            raise ConfigError(
                f"model.hidden_sizes={list(hidden_sizes)} is not allowed: must be a list of "
                "integers >= 1, e.g. [256,128]"
            )
        layers: list[nn.Module] = []
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_outputs))
        self.layers = nn.Sequential(*layers)
        self.input_shape, self.num_outputs = tuple(input_shape), num_outputs
        if init != "default":
            self._init_weights(init, activation)
        if compile:
            self.compile()

    def _init_weights(self, init: str, activation: str) -> None:
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        for i, linear in enumerate(linears):
            if init == "he":
                # fan_in keeps the forward activations' variance constant through ReLU layers;
                # the output layer feeds no ReLU, so it gets the linear gain.
                nonlinearity = "relu" if i < len(linears) - 1 else "linear"
                nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity=nonlinearity)
            else:
                gain = nn.init.calculate_gain(activation) if i < len(linears) - 1 else 1.0
                nn.init.xavier_normal_(linear.weight, gain=gain)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.flatten(1))


class CNN(nn.Module):
    """A small convolutional network for images ``(N, C, H, W)``: a second model on the same
    data contract. Each block is 3x3 conv -> ReLU -> 2x2 max-pool; then one hidden layer.

    Args:
        input_shape: ``(channels, height, width)``; filled in from the data.
        num_outputs: number of outputs (classes); filled in from the data.
        channels: output channels of each conv block, e.g. ``[32, 64]``.
        hidden: width of the fully connected layer after the conv blocks.
        dropout: dropout probability before the output layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"model=cnn needs images (channels, height, width), but this data has "
                f"input_shape {tuple(input_shape)}: use model=mlp for tables"
            )
        blocks: list[nn.Module] = []
        width, (height, side) = input_shape[0], input_shape[1:]
        for out in channels:
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width, height, side = out, height // 2, side // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * height * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )
        self.input_shape, self.num_outputs = tuple(input_shape), num_outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
