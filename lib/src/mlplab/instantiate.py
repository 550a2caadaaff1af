"""The one place where config nodes become objects."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

_BUILDABLE = "__mlplab_buildable__"


def buildable(obj: Any) -> Any:
    """Mark a function, or a class that is none of the kinds a config group builds (see
    :func:`mlplab.stored.built_kinds`), as one that a config read back from a checkpoint may
    build: a data source, a factory of loggers, an augmentation::

        @buildable
        def my_table(name: str) -> pd.DataFrame: ...

    A stored config is data from a file; it builds nothing else that is not such a class."""
    setattr(obj, _BUILDABLE, True)
    return obj


def is_buildable(obj: Any) -> bool:
    """Whether ``obj`` itself (not a class it derives from) was marked :func:`buildable`."""
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and bool(vars(obj).get(_BUILDABLE))


def instantiate_optional(node: DictConfig | None, **kwargs: Any) -> Any | None:
    """Instantiate ``node``; ``None`` for a node without ``_target_`` (an empty option)."""
    if node is None or "_target_" not in node:
        return None
    return instantiate(node, **kwargs)


def instantiate_each(node: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a named collection (callbacks, loggers), skipping nulls."""
    if node is None:
        return []
    return [
        obj for obj in (instantiate_optional(child) for child in node.values()) if obj is not None
    ]
