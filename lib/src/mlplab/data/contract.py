"""The data contract: what a data module gives the rest of mlplab, written down once.

The module, the report, the training doctor and ``eval.py`` rely on these attributes and on
nothing else of a data module. They hold once ``setup()`` has run. Any
``LightningDataModule`` that provides them plugs in (``TensorDataModule`` provides them
for data that fits in memory; subclass it and write ``load_arrays``).

- ``name``: the data set's name, for reports.
- ``task``: ``"classification"`` (targets are class indices) or ``"regression"``.
- ``input_shape``: one example's shape, without the batch: ``(C, H, W)`` for images (stored
  as ``(N, C, H, W)``, flattened only inside a model that wants vectors), ``(F,)`` for tables.
- ``num_outputs``: the number of classes, or of regression targets.
- ``class_names``: a display name per class index (classification), else ``None``.
- ``splits``: ``{"train", "val", "test"}`` -> ``(inputs, targets)``, whole tensors.
- ``baseline()``: per split, the score of the trivial predictor the model must beat
  (:func:`baseline_score`: the accuracy of always predicting the training set's most
  frequent class; for regression, the R² of predicting the training mean).

A model is any ``nn.Module`` whose constructor takes ``input_shape`` and ``num_outputs``;
both are filled in from the data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

TASKS = ("classification", "regression")


@runtime_checkable
class TaskData(Protocol):
    """What mlplab reads from a data module (after ``setup``); see the module docstring."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: list[str] | None
    splits: dict[str, tuple[Tensor, Tensor]]

    def baseline(self) -> dict[str, float]: ...


def baseline_score(task: str, train_targets: Tensor, targets: Tensor) -> float:
    """The trivial predictor's score on ``targets``: for classification the accuracy of
    always predicting ``train_targets``' most frequent class; for regression the R² of
    predicting their mean (0 when ``targets`` do not vary)."""
    if task == "classification":
        majority = int(torch.bincount(train_targets.long().flatten()).argmax())
        return float((targets == majority).float().mean())
    mean = train_targets.double().mean(0)
    y = targets.double()
    total = ((y - y.mean(0)) ** 2).sum()
    return float(1 - ((y - mean) ** 2).sum() / total) if total > 0 else 0.0
