"""A user's own model, metric, data module and callback: mlplab grows from outside.

Train with them, from the repository root, with no file of mlplab edited:

    PYTHONPATH=examples/my_project python train.py \
        hydra.searchpath=[file://examples/my_project/conf] model=linear metrics=confident
"""

from __future__ import annotations

import torch
from lightning import Callback
from mlplab.data import TensorDataModule
from mlplab.record import RunRecord
from torch import nn
from torchmetrics import Metric


class LinearNet(nn.Module):
    """A single linear layer: the smallest model the data contract allows."""

    def __init__(self, input_shape, num_outputs, bias=True):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs, bias=bias)

    def forward(self, x):
        return self.linear(x.flatten(1))


class MeanConfidence(Metric):
    """The mean of the highest softmax probability: how sure the model is."""

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits, target):
        self.total += logits.softmax(1).max(1).values.sum()
        self.count += len(logits)

    def compute(self):
        return self.total / self.count


class SmallDigits(TensorDataModule):
    """scikit-learn's 1,797 8x8 digits, as a user's own image loader: one method."""

    def load_arrays(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images * 16).clip(0, 255).astype("uint8")  # 0..16 -> 0..255
        pool, test = (images[:1500], digits.target[:1500]), (images[1500:], digits.target[1500:])
        return pool, test


class WeightNorm(Callback):
    """A user's callback whose result belongs in the run's outputs."""

    def on_fit_end(self, trainer, pl_module):
        norm = float(sum(p.norm() ** 2 for p in pl_module.parameters()) ** 0.5)
        RunRecord.of(trainer).add(
            "weight_norm",
            norm,
            report=["## Weights", "", f"L2 norm {norm:.3f}"],
            console=[f"weight norm {norm:.3f}"],
            wandb={"weight_norm": norm},
        )
