"""Losses of the lesson. Each takes raw logits and integer class labels.

Cross-entropy works on the logits directly (log-softmax inside, numerically stable). MSE and
MAE compare the softmax probabilities with the one-hot target, as the lesson does when it
shows why they train classifiers worse: their gradients vanish when the model is confidently
wrong.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropy(nn.Module):
    """Cross-entropy on logits. ``label_smoothing`` as in ``torch.nn.CrossEntropyLoss``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class ProbabilityMSE(nn.Module):
    """Mean squared error between softmax probabilities and the one-hot target."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = logits.softmax(dim=1)
        return F.mse_loss(probs, F.one_hot(target, probs.shape[1]).to(probs.dtype))


class ProbabilityMAE(nn.Module):
    """Mean absolute error between softmax probabilities and the one-hot target."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        probs = logits.softmax(dim=1)
        return F.l1_loss(probs, F.one_hot(target, probs.shape[1]).to(probs.dtype))
