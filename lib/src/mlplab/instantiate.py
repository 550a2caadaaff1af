"""The one place where config nodes become objects."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

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


def config_nodes(config: Any, key: str = "") -> Iterator[tuple[str, str, Any]]:
    """Each ``(path, name, value)`` of a config tree (a config is read unresolved), depth
    first: ``("optimizer.lr", "lr", 0.01)``, ``("callbacks[0]", "", {...})``."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    if isinstance(config, dict):
        for name, value in config.items():
            where = f"{key}.{name}" if key else str(name)
            yield where, str(name), value
            yield from config_nodes(value, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield f"{key}[{i}]", "", value
            yield from config_nodes(value, f"{key}[{i}]")


def built_parts(config: Any) -> dict[str, str]:
    """The key of each node of ``config`` that builds an object, and its ``_target_``:
    ``{"optimizer": "torch.optim.SGD", ...}`` (``""`` for the root)."""
    return {
        where.removesuffix("_target_").removesuffix("."): value
        for where, name, value in config_nodes(config)
        if name == "_target_" and isinstance(value, str)
    }


def locate(target: str) -> Any:
    """The object ``target`` (``package.module.Name``) names, as Hydra finds it, without
    Hydra's log line when it is not there (``ImportError`` or ``AttributeError`` then)."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for name in parts[end:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(target)
