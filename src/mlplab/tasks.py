"""What a data set's task implies: the module, loss and metrics options, written down once.

A table's task is known once it is read (``data.task=auto`` decides it from the target), so
``train()`` asks :func:`with_task_defaults` after loading the data. A group the run chose
itself (on the command line, or in an experiment) is kept: a choice that contradicts the task
is refused in one line by the module (:meth:`mlplab.module.Classifier._check_parts`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mlplab.config import CONF_DIR

TASK_OPTIONS = {
    "classification": {"module": "classifier", "loss": "cross_entropy", "metrics": "accuracy"},
    "regression": {"module": "regressor", "loss": "mse", "metrics": "regression"},
}
DEFAULT_TASK = "classification"  # conf/train.yaml's defaults are this task's options


def with_task_defaults(cfg: DictConfig, task: str) -> DictConfig:
    """``cfg`` with the module, loss and metrics options ``task`` calls for, in each of those
    groups that the run did not choose itself."""
    wanted = TASK_OPTIONS.get(task)
    if wanted is None or task == DEFAULT_TASK:
        return cfg
    chosen = chosen_groups(cfg)
    switch = {group: option for group, option in wanted.items() if group not in chosen}
    if not switch:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        for group, option in switch.items():
            node = option_config(group, option)
            cfg[group] = OmegaConf.merge(cfg[group], node) if _extends(group, option) else node
    picked = ", ".join(f"{group}={option}" for group, option in switch.items())
    print(f"{task}: {picked} (the task's defaults; choose others with {', '.join(switch)}=...)")
    return cfg


def chosen_groups(cfg: DictConfig) -> set[str]:
    """The task groups this run chose: named on Hydra's command line or changed from
    conf/train.yaml's default by an experiment; without Hydra (``train(cfg)`` from Python),
    those whose config differs from the default option's."""
    from hydra.core.hydra_config import HydraConfig

    defaults = TASK_OPTIONS[DEFAULT_TASK]
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        named = {o.split("=", 1)[0].lstrip("+~") for o in hydra.overrides.task}
        return {g for g in defaults if g in named or hydra.runtime.choices.get(g) != defaults[g]}
    return {
        group
        for group, option in defaults.items()
        if _target(cfg.get(group)) != _target(option_config(group, option))
        or (group != "module" and cfg.get(group) != option_config(group, option))
    }


def option_config(group: str, option: str) -> DictConfig:
    """The config of ``conf/<group>/<option>.yaml`` (its own keys, without a defaults list)."""
    node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    with open_dict(node):
        node.pop("defaults", None)
    return node


def _extends(group: str, option: str) -> bool:
    """Whether an option builds on another of its group (``regressor`` on ``classifier``)."""
    return "defaults" in OmegaConf.load(CONF_DIR / group / f"{option}.yaml")


def _target(node: Any) -> Any:
    return node.get("_target_") if isinstance(node, DictConfig) else None
