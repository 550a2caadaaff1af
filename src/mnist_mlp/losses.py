"""Losses of the lesson, for class labels and for real-valued targets.

Cross-entropy works on the logits directly (log-softmax inside, numerically stable). With
class labels (integer targets), MSE and MAE compare the softmax probabilities with the
one-hot target, as the lesson does when it shows why they train classifiers worse: their
gradients vanish when the model is confidently wrong. With real-valued targets (regression)
they, and Huber, compare predictions and targets directly.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _as_probabilities(outputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Class labels: softmax probabilities and the one-hot target; real targets: as given."""
    if target.is_floating_point():
        return outputs, target
    probs = outputs.softmax(dim=1)
    return probs, F.one_hot(target, probs.shape[1]).to(probs.dtype)


class CrossEntropy(nn.Module):
    """Cross-entropy on logits. ``label_smoothing`` as in ``torch.nn.CrossEntropyLoss``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if target.is_floating_point():
            raise TypeError("cross-entropy needs class labels: use loss=mse, mae or huber")
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class ProbabilityMSE(nn.Module):
    """Mean squared error: of softmax probabilities vs one-hot labels, or of real targets."""

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(*_as_probabilities(outputs, target))


class ProbabilityMAE(nn.Module):
    """Mean absolute error: of softmax probabilities vs one-hot labels, or of real targets."""

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(*_as_probabilities(outputs, target))


class Huber(nn.Module):
    """Huber loss: squared below ``delta``, absolute above (robust to outlying targets)."""

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(*_as_probabilities(outputs, target), delta=self.delta)
