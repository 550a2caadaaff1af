"""Metrics as torchmetrics objects built from config: ``metrics=accuracy`` and friends.

Each entry of the ``metrics`` config is a torchmetrics metric (``_target_`` and its
arguments). ``num_classes`` is filled in from the data when the metric's constructor takes
it and the config leaves it out.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class, instantiate
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

FROM_DATA = ("num_classes",)


def build_metrics(
    specs: Mapping[str, Mapping[str, Any]] | None, num_outputs: int
) -> MetricCollection:
    """A ``MetricCollection`` of ``{name: metric}``; ``None`` or ``{}`` gives an empty one.

    ``num_outputs`` (classes) fills each metric's ``num_classes``.
    """
    metrics = {}
    for name, spec in (specs or {}).items():
        if spec is None:  # metrics.f1=null drops an entry
            continue
        takes = inspect.signature(get_class(spec["_target_"])).parameters
        filled = {k: num_outputs for k in FROM_DATA if k in takes and k not in spec}
        metrics[name] = instantiate(spec, **filled)
    return MetricCollection(metrics, compute_groups=False)


class MulticlassError(MulticlassAccuracy):
    """Top-k error rate, ``1 - accuracy`` (micro-averaged by default): the share of examples
    whose true class is not among the ``top_k`` highest scores."""

    higher_is_better = False  # accuracy's is True: an error rate is better lower

    def __init__(self, num_classes: int, top_k: int = 1, average: str = "micro", **kwargs) -> None:
        super().__init__(num_classes=num_classes, top_k=top_k, average=average, **kwargs)

    def compute(self) -> Tensor:
        return 1 - super().compute()
