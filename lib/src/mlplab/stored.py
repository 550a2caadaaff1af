"""Reading what a checkpoint file holds, as untrusted input: its tensors without running its
code, and the run config stored in it, checked before anything is built from it."""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from mlplab.config import project_packages
from mlplab.errors import CheckpointError
from mlplab.instantiate import built_parts, config_nodes, is_buildable, locate

if TYPE_CHECKING:
    import torch

# What mlplab adds to a Lightning checkpoint (written by mlplab.checkpoints).
CONFIG_KEY = "mlplab_config"
WANDB_ID_KEY = "mlplab_wandb_run_id"
MLFLOW_ID_KEY = "mlplab_mlflow_run_id"
PROJECT_KEY = "mlplab_project_packages"  # the project's own packages when it was written


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` (no code runs); clear errors otherwise."""
    import torch  # here: the CLI imports this module before the config is checked

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Not torch's advice to retry with weights_only=False: that runs the file's code.
        raise CheckpointError(
            f"cannot load checkpoint {path}: it holds Python objects other than tensors and "
            "plain values, which mlplab never unpickles (they can run code); use a checkpoint "
            "written by mlplab's train.py"
        ) from exc
    except Exception as exc:  # torch raises many types for a bad file: report them all alike
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from exc


# The packages whose objects a run builds from a config. A config read from a checkpoint may
# name only these, the project's own (:func:`project_packages`) and the user's others
# (``trusted_packages`` in conf/trusted/default.yaml): it is data from a file, and Hydra
# would call whatever its ``_target_`` names.
BUILT_IN_PACKAGES = ("mlplab", "torch", "torchmetrics", "lightning")
# ... except these parts of them, which read or write files or load code.
UNSAFE_TARGETS = (
    "torch.load",
    "torch.save",
    "torch.hub",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch.ops.load_library",
    "torch.classes.load_library",
)
# Arguments that switch a safety off, with their one safe value: a stored config never sets
# another (``weights_only=False`` is how a pickle runs code).
SAFE_VALUES = {"weights_only": True, "allow_pickle": False, "trust_remote_code": False}
# The one interpolation a stored config keeps: a secret read from the environment.
ENV_SECRET = re.compile(r"\$\{oc\.env:[A-Za-z_][A-Za-z0-9_]*\}")
_trusted: list[str] = []


def built_kinds() -> tuple[type, ...]:
    """The kinds of class the config groups build, and so all a stored config may build:
    networks, losses and augmentations (``nn.Module``), optimizers and schedulers (as
    partials), metrics, LightningModules and data modules, callbacks, loggers, profilers,
    checkpoint IO and the Trainer."""
    import lightning as L
    import torchmetrics
    from lightning.fabric.plugins import CheckpointIO
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.profilers import Profiler
    from torch import nn, optim

    return (
        nn.Module,
        optim.Optimizer,
        optim.lr_scheduler.LRScheduler,
        optim.lr_scheduler.ReduceLROnPlateau,
        torchmetrics.Metric,
        L.LightningModule,
        L.LightningDataModule,
        L.Callback,
        Logger,
        Profiler,
        CheckpointIO,
        L.Trainer,
    )


def trust_packages(packages: Any, config: Any = None) -> None:
    """Add the user's own packages (the run's ``trusted_packages``), and those that the
    command's own ``config`` builds from (the project's), to those a stored config may build
    from. Called with the command line's config, never a checkpoint's."""
    own = sorted({target.split(".")[0] for target in built_parts(config).values()})
    _trusted[:] = [str(p) for p in (packages or [])] + own


def forget_trusted() -> None:
    """A new command trusts only what its own command line says (:func:`trust_packages`)."""
    _trusted.clear()


def renamed_project(config: dict[str, Any], written_by: Any) -> dict[str, Any]:
    """``config`` with the targets in the project package it was written by (``written_by``,
    stored in the checkpoint) read as the project's package now, if that was renamed: the
    old one no longer imports and the project has one package."""
    now = project_packages()
    old = [p for p in written_by or [] if isinstance(p, str) and p.isidentifier()]
    if len(now) != 1 or len(old) != 1 or old[0] == now[0] or importlib.util.find_spec(old[0]):
        return config
    return _with_targets_renamed(config, old[0], now[0])


def _with_targets_renamed(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                new + v[len(old) :]
                if k == "_target_" and isinstance(v, str) and v.startswith(old + ".")
                else _with_targets_renamed(v, old, new)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_with_targets_renamed(v, old, new) for v in value]
    return value


def check_targets(config: Any, source: str) -> None:
    """Refuse, in one line naming the key, anything in ``config`` (a config read from
    ``source``) that could run code other than building the run's parts: a ``_target_``
    outside the trusted packages or not of a built kind (:func:`built_kinds`, or marked
    :func:`mlplab.buildable`), an argument that switches a safety off (:data:`SAFE_VALUES`), or an
    interpolation (a stored config is resolved; only a secret's ``${oc.env:NAME}`` stays)."""
    for where, name, value in config_nodes(config):
        if name == "_target_":
            _check_target(value, source, where)
        elif name in SAFE_VALUES and value != SAFE_VALUES[name]:
            raise CheckpointError(
                f"{source} sets {where}={str(value)[:40]}, which switches a safety off (only "
                f"{name}={SAFE_VALUES[name]} is allowed): refused, nothing was built"
            )
        elif isinstance(value, str) and "${" in value and not _secret_from_env(name, value):
            raise CheckpointError(
                f"{source} holds an interpolation at {where} ({_shown(value)}), which a stored "
                "(resolved) config never has: refused, nothing was built"
            )


def _secret_from_env(name: str, value: str) -> bool:
    from mlplab.secrets import is_secret_name

    return (
        is_secret_name(name)
        and re.fullmatch(r"\$\{oc\.env:[A-Za-z_][A-Za-z0-9_]*\}", value) is not None
    )


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _check_target(target: Any, source: str, key: str) -> None:
    packages = (*BUILT_IN_PACKAGES, *project_packages(), *_trusted)
    target = str(target)
    unsafe = any(target == t or target.startswith(t + ".") for t in UNSAFE_TARGETS)
    if target.split(".")[0] not in packages or unsafe:
        raise CheckpointError(
            f"{source} names {key}={_shown(target)}, outside the packages a stored config may "
            f"build from ({', '.join(packages)}; add your own with trusted_packages=[...]): "
            "refused, nothing was built"
        )
    try:
        obj = locate(target)
    except Exception:  # whatever its import raised: nothing is built from it
        raise CheckpointError(
            f"{source} names {key}={_shown(target)}, which does not exist in this environment: "
            "refused, nothing was built"
        ) from None
    if inspect.isclass(obj) and issubclass(obj, built_kinds()):
        return
    if is_buildable(obj):
        return
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
    raise CheckpointError(
        f"{source} names {key}={_shown(target)}, a {kind} that no config group builds (a stored "
        "config builds only networks, losses, optimizers, schedulers, metrics, modules, data "
        "modules, callbacks, loggers and what is marked @mlplab.buildable): refused, "
        "nothing was built"
    )


def run_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    """The resolved training config stored in a checkpoint, checked: every ``_target_`` in it
    is in a trusted package (:func:`check_targets`)."""
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} holds no mlplab config: it was not written by mlplab's train.py"
        )
    stored = checkpoint[CONFIG_KEY]
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: its stored config is not a mapping")
    stored = renamed_project(stored, checkpoint.get(PROJECT_KEY))
    check_targets(stored, f"the config stored in {path}")
    return OmegaConf.create(stored)


def load_run_config(path: str | Path) -> DictConfig:
    return run_config(load_checkpoint(path), path)


def check_compatible(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, path: str | Path
) -> None:
    """Raise ``CheckpointError`` listing each layer whose name or shape differs from the model."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state_dict.items()}
    problems = [
        f"{name}: checkpoint {found.get(name, 'missing')} vs model {expected.get(name, 'missing')}"
        for name in sorted(expected.keys() | found.keys())
        if expected.get(name) != found.get(name)
    ]
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems))
