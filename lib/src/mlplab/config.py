"""Checks on a composed config that run before anything heavy is imported or computed."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlplab.errors import ConfigError

_ABSENT = object()
ENTRY_CONF_DIR: list[Path] = []  # set by mlplab.cli.entry_point: the script's conf/


def conf_dir() -> Path:
    """The project's config folder (Hydra's config groups): the one Hydra composed from, else
    the running entry point's ``conf/``, else the ``conf/`` of the working directory or of
    the nearest folder above it that has one (a project's tests run from anywhere in it)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path)
    if ENTRY_CONF_DIR:
        return ENTRY_CONF_DIR[0]
    here = Path.cwd().resolve()
    found = (f / "conf" for f in (here, *here.parents) if (f / "conf" / "train.yaml").is_file())
    return next(found, here / "conf")


def project_packages() -> tuple[str, ...]:
    """The project's own packages: those in the ``src/`` folder beside its ``conf/``."""
    return _packages_in(conf_dir().parent / "src")


@functools.cache
def _packages_in(src: Path) -> tuple[str, ...]:
    return tuple(sorted(init.parent.name for init in src.glob("*/__init__.py")))


def forget_project() -> None:
    """A new command finds the project's packages again (a process may run several, and a
    package may have been renamed between them)."""
    _packages_in.cache_clear()


def project_target(name: str = "") -> str:
    """``${project:model.MLP}`` in conf/: ``model.MLP`` of the project's package (the one
    package in ``src/``), so that conf/ does not repeat the package's name and renaming the
    package means renaming its folder; ``${project:}`` is the package's name."""
    packages = project_packages()
    if len(packages) != 1:
        src = conf_dir().parent / "src"
        found = ", ".join(packages) or "none"
        raise ConfigError(
            f"${{project:{name}}} stands for the one package in {src} (found: {found}); "
            f"write the target in full instead, e.g. my_package.{name or 'model.MLP'}"
        )
    return f"{packages[0]}.{name}" if name else packages[0]


OmegaConf.register_new_resolver("project", project_target, replace=True)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_size(v: Any) -> bool:
    """A split size: a count of examples, or a fraction of them (tables)."""
    return (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1)


# key, test, what is allowed (said in the error message). Only what is checked before anything
# heavy loads; a constructor checks its own arguments (e.g. a network's activation).
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("regularization.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("regularization.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("regularization.l1", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.val_size", _is_size, "an integer >= 1 or a fraction in (0, 1)"),
    ("data.train_size", lambda v: v is None or _is_size(v), "null, an integer >= 1 or a fraction"),
    ("data.test_size", _is_size, "an integer >= 1 or a fraction in (0, 1)"),
    (
        "data.augment",
        lambda v: v is None or (isinstance(v, dict) and "_target_" in v),
        "null or an augmentation with a _target_ (choose one with augment=shift)",
    ),
    (
        "trusted_packages",
        lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v),
        "a list of package names, e.g. [my_project]",
    ),
    ("trainer.max_epochs", lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1)"),
    ("callbacks.early_stopping.patience", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
]


# What to say when a mandatory value (``???`` in the config) was not given.
MISSING_HINTS = {
    "ckpt_path": "the run dir or .ckpt file of a trained model, e.g. "
    "ckpt_path=outputs/<date>/<time>",
    "input": "the table (CSV, TSV, Parquet), image folder, image or IDX file to predict, "
    "e.g. input=new_rows.csv",
    "model.checkpoint": "the run dir or checkpoint of an MLP trained before, e.g. "
    "python train.py experiment=lesson data.data_dir=... "
    "then model.checkpoint=outputs/<date>/<time>",
}


# Trainer arguments that mlplab fills from elsewhere: setting them is refused, naming where.
OWNED_TRAINER_ARGUMENTS = {
    "callbacks": "the callbacks group (callbacks.<name>=null drops one; "
    "+callbacks.<name>._target_=... adds one)",
    "logger": "the logger group (logger=none, logger=csv, logger=wandb)",
    "default_root_dir": "the run dir: set hydra.run.dir=... (every file of a run is in it, "
    "so that a run dir is one place to resume, compare and delete)",
}


def check_trainer(trainer: DictConfig) -> None:
    """Refuse Trainer arguments mlplab cannot honour, before any logger starts a run.

    Imports torch and Lightning: call it once the config is otherwise valid.
    """
    import torch

    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU here: use "
            "trainer.accelerator=auto (or cpu), or run on a machine with a GPU"
        )
    for key, source in OWNED_TRAINER_ARGUMENTS.items():
        if trainer.get(key) is not None:
            raise ConfigError(f"trainer.{key} is set by mlplab from {source}")
    start_method = _start_method(trainer.get("strategy"))
    if start_method in ("spawn", "fork", "forkserver"):
        raise ConfigError(
            f"trainer.strategy={_strategy_name(trainer.get('strategy'))} trains in "
            f"{start_method}ed worker processes, whose results (the epoch history, "
            "val/acc_best, the doctor, the report) cannot reach the run: use trainer=ddp_cpu "
            "(or trainer.strategy=ddp), the same DDP with each rank launched as a script"
        )


def _strategy_name(strategy: Any) -> str:
    return str(strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy)


def _start_method(strategy: Any) -> str | None:
    """How a strategy starts its processes: a registered name's, or a config's argument."""
    if isinstance(strategy, DictConfig):
        return strategy.get("start_method")
    from lightning.pytorch.strategies import StrategyRegistry

    if str(strategy) not in StrategyRegistry:
        return None
    return StrategyRegistry[str(strategy)]["init_params"].get("start_method")


def check_required(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first required value (``???``) left unset, with a hint."""
    for key in sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra.")):
        hint = MISSING_HINTS.get(key, "set it on the command line: " + key + "=...")
        raise ConfigError(f"{key} is required: {hint}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first bad value, naming key, value and what is allowed."""
    check_required(cfg)
    for key, ok, allowed in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        if isinstance(value, DictConfig | list) or OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is not allowed: must be {allowed}")
    if cfg.get("compare_from_scratch") and OmegaConf.select(cfg, "model.checkpoint") is None:
        raise ConfigError(
            "compare_from_scratch=true compares a pretrained network with a fresh one: "
            "use it with model=pretrained (e.g. experiment=transfer_fashion)"
        )
