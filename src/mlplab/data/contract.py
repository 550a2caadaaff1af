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
  (accuracy of always predicting the training set's most frequent class).

A model is any ``nn.Module`` whose constructor takes ``input_shape`` and ``num_outputs``;
both are filled in from the data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

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
