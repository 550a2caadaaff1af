"""What a data set's task implies: the module, loss and metrics options, written down once.

A table's task is known once it is read (``data.task=auto`` decides it from the target), so
a training run asks :func:`with_task_defaults` after loading the data
(:meth:`mlplab.training.TrainingRun.for_task`). A group the run chose itself (on the command
line, or in an experiment) is kept: a choice that contradicts the task is refused in one line
by the module. The options are read from the project's own config groups, and the config
that results is written over Hydra's ``.hydra/config.yaml``: the config saved is the one that
ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mlplab.config import conf_dir
from mlplab.errors import ConfigError
from mlplab.rundir import write_text
from mlplab.secrets import redact_secrets

TASK_OPTIONS = {
    "classification": {"module": "classifier", "loss": "cross_entropy", "metrics": "accuracy"},
    "regression": {"module": "regressor", "loss": "mse", "metrics": "regression"},
}
DEFAULT_TASK = "classification"  # conf/train.yaml's defaults are this task's options


def with_task_defaults(cfg: DictConfig, task: str) -> DictConfig:
    """``cfg`` with the module, loss and metrics options ``task`` calls for, in each of those
    groups that the run did not choose itself."""
    wanted = TASK_OPTIONS.get(task)
    if wanted is None or task == DEFAULT_TASK or cfg.get("ckpt_path"):
        return cfg  # a continued run's stored config is the one that ran
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
    record_config(cfg)
    return cfg


def record_config(cfg: DictConfig) -> None:
    """Write ``cfg`` over the run's ``.hydra/config.yaml`` (whole, secrets redacted), when
    Hydra wrote one for this run."""
    from hydra.core.hydra_config import HydraConfig

    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    if subdir is None:
        return
    saved = Path(cfg.output_dir) / subdir / "config.yaml"
    if saved.is_file():
        write_text(saved, OmegaConf.to_yaml(redact_secrets(cfg)))


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
    path = conf_dir() / group / f"{option}.yaml"
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path} holds a list, not an option's keys")
    with open_dict(node):
        node.pop("defaults", None)
    return node


def _extends(group: str, option: str) -> bool:
    """Whether an option builds on another of its group (``regressor`` on ``classifier``)."""
    return "defaults" in OmegaConf.load(conf_dir() / group / f"{option}.yaml")


def _target(node: Any) -> Any:
    return node.get("_target_") if isinstance(node, DictConfig) else None
