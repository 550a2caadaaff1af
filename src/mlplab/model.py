"""The multilayer perceptron of the lesson, every choice a constructor argument."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
INITS = ("he", "xavier", "default")


class MLP(nn.Module):
    """Fully connected classifier: Linear -> activation -> dropout per hidden layer, then logits.

    Args:
        in_features: input size (784 for flattened 28x28 images); filled in from the data.
        num_classes: number of outputs; filled in from the data.
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
        in_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        init: str = "he",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={activation!r}: choose one of {sorted(ACTIVATIONS)}"
            )
        if init not in INITS:
            raise ValueError(f"model.init={init!r}: choose one of {list(INITS)}")
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        self.in_features, self.num_classes = in_features, num_classes
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

    def forward(self, x):
        return self.layers(x.flatten(1))
