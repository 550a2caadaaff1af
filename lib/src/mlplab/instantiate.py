"""The one place where config nodes become objects."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


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
