"""A user's own network, with its own config keys (none of the MLP's): what a project adds."""

from __future__ import annotations

from torch import nn


class TinyConvNet(nn.Module):
    """One 3x3 convolution and a linear head: takes images ``(C, H, W)`` only."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, 3)
        self.head = nn.LazyLinear(num_outputs)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))
