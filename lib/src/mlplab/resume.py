"""What a run continues from, and with which config: the one place that decides it.

A run continues from a checkpoint when it is given ``ckpt_path=`` (a ``.ckpt`` file, a run
dir, or ``last``: the latest run under ``outputs/``), and when it is a SLURM job that was
requeued after it saved a checkpoint in its own run dir. It continues with the config stored
in that checkpoint, in the run dir it belongs to (where it is now, if it was moved), in the
same W&B run; the command line may only extend it (``trainer.max_epochs=N``) or quiet it
(:data:`RESUME_OVERRIDABLE`). :func:`continued_config` is that decision; ``train()`` calls it
first. Hydra uses :func:`register_resolvers` to put a resumed run's own files into its own run
dir, and an interrupted run prints :func:`resume_command`.

Light to import (torch is imported only to read a checkpoint): the resolvers are registered
before Hydra composes the config.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlplab.config import conf_dir
from mlplab.errors import CheckpointError, ConfigError
from mlplab.slurm import restart_count, slurm_job_id

RESUMABLE = ("last.ckpt", "interrupted.ckpt")  # written after every epoch / on a signal


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's checkpoint to continue from: the more recent of ``last.ckpt`` and
    ``interrupted.ckpt`` (both written atomically, so complete), or None."""
    found = [Path(run_dir) / "checkpoints" / name for name in RESUMABLE]
    found = [path for path in found if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns) if found else None


def requeued_checkpoint(output_dir: str | Path) -> Path | None:
    """For a job SLURM has requeued: the newest checkpoint in its own run dir to continue
    from, if it wrote one before it stopped. Checkpoints are written atomically, so each one
    present is complete; of ``interrupted.ckpt`` (saved on the signal) and ``last.ckpt``
    (saved after every epoch) the more recent is taken."""
    if slurm_job_id() is None or restart_count() == 0:
        return None
    return newest_checkpoint(output_dir)


def find_checkpoint(ckpt_path: str | Path, in_run_dir: str | None = None) -> Path:
    """``ckpt_path`` as a checkpoint file: itself, the checkpoint ``in_run_dir`` of a run dir
    (by default its newest one to resume from), or for ``last`` the newest ``last.ckpt``
    under ``outputs/`` (the latest run)."""
    if str(ckpt_path) == "last":
        candidates = sorted(
            Path("outputs").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            raise CheckpointError(
                "ckpt_path=last: no outputs/**/checkpoints/last.ckpt to resume from"
            )
        return candidates[-1].resolve()
    path = Path(ckpt_path).expanduser()
    if not path.is_dir():
        return path
    if in_run_dir is None:
        return newest_checkpoint(path) or path / "checkpoints" / RESUMABLE[0]
    return path / "checkpoints" / in_run_dir


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir holding ``checkpoint`` (``<run>/checkpoints/<name>.ckpt``), if it is one."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def resume_command(checkpoint: Path) -> str:
    """``python train.py ckpt_path=...``, quoted so that it works when pasted into a shell:
    Hydra's quotes around a path with spaces or other characters, the shell's around those."""
    path = str(checkpoint)
    if re.fullmatch(r"[\w./@+-]+", path, flags=re.ASCII):
        return f"python train.py ckpt_path={path}"
    hydra_value = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "python train.py " + shlex.quote(f"ckpt_path={hydra_value}")


# What a resumed run may change: how long it trains, and how much it prints. Anything else
# would make it another run than the one its checkpoint belongs to.
RESUME_OVERRIDABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "torch_threads",
    "verbose",
)


def continued_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """The config to run: ``cfg``, or, to continue a run, the config stored in its checkpoint:
    with ``ckpt_path`` set, or in a SLURM job that was requeued after it saved a checkpoint
    in its own run dir (never another run's).

    ``overrides`` (the command line's ``key=value``; by default Hydra's) may extend the run
    (``trainer.max_epochs=N``) or quiet it (:data:`RESUME_OVERRIDABLE`); one that would change
    anything else is refused in one line, as is continuing a run that has nothing left to do.
    Called without Hydra (``train(cfg)`` from Python), ``cfg``'s own values of those keys
    are the ones asked for.
    """
    from mlplab.stored import trust_packages

    trust_packages(cfg.get("trusted_packages"), cfg)  # the command line's, never a checkpoint's
    if not cfg.get("ckpt_path"):
        requeued = requeued_checkpoint(cfg.output_dir)
        if requeued is None:
            return cfg
        cfg = cfg.copy()
        cfg.ckpt_path = str(requeued)
        print(f"SLURM requeued this job (restart {restart_count()}): continuing it")
        resumed = resume_config(cfg)[0]  # the same job: its command line made the stored config
        print(
            f"resuming {resumed.output_dir} from {resumed.ckpt_path} with the config stored in it"
        )
        return resumed
    resumed, checkpoint = resume_config(cfg)
    if overrides is None and not _hydra_running():
        # train(cfg) called directly: the given config's limits are what is asked for.
        changed = []
        for key in RESUME_OVERRIDABLE:
            value = OmegaConf.select(cfg, key)
            if value != OmegaConf.select(resumed, key):
                OmegaConf.update(resumed, key, value, force_add=True)
                changed.append(f"{key}={value}")
    else:
        changed = _apply_resume_overrides(resumed, command_line_overrides(overrides))
    _check_work_left(resumed, checkpoint)
    extra = f" ({', '.join(changed)})" if changed else ""
    stored = f"with the config stored in it{extra}"
    print(f"resuming {resumed.output_dir} from {resumed.ckpt_path} {stored}")
    return resumed


def command_line_overrides(overrides: list[str] | None = None) -> list[str]:
    """The ``key=value`` overrides this run was given: ``overrides``, else Hydra's."""
    if overrides is not None:
        return list(overrides)
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if _hydra_running() else []


def _hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def _apply_resume_overrides(resumed: DictConfig, overrides: list[str]) -> list[str]:
    """Apply the overrides a resumed run may take; refuse, in one line, the ones that would
    change its config. Returns the ones applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    applied: list[str] = []
    refused: list[str] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "ckpt_path" or key.startswith("hydra.") or override.is_delete():
            continue
        value = override.value()
        if key in RESUME_OVERRIDABLE:
            OmegaConf.update(resumed, key, value, force_add=True)
            applied.append(str(override.input_line))
            continue
        stored = OmegaConf.select(resumed, key, default=None)
        if OmegaConf.is_config(stored):
            stored = OmegaConf.to_container(stored, resolve=True)
        if stored != value or _is_group(key):
            refused.append(str(override.input_line))
    if refused:
        raise ConfigError(
            f"ckpt_path continues a run with the config stored in its checkpoint; "
            f"{', '.join(refused)} would change it (only {', '.join(RESUME_OVERRIDABLE)} "
            "may): start a new run instead, or model=pretrained model.checkpoint=... to start "
            "from its weights"
        )
    return applied


def _is_group(key: str) -> bool:
    return (conf_dir() / key).is_dir()


def _check_work_left(resumed: DictConfig, checkpoint: dict[str, Any]) -> None:
    """Refuse to continue a finished run that its limits leave nothing to do in; a run that
    finished fitting but not testing goes on (it tests)."""
    run_dir = run_dir_of(Path(resumed.ckpt_path))
    if run_dir is None or not (run_dir / "metrics.json").is_file():
        return
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epochs = int(progress.get("current", {}).get("processed", 0))
    steps = int(checkpoint.get("global_step", 0))
    max_epochs = resumed.trainer.get("max_epochs")
    max_steps = resumed.trainer.get("max_steps") or -1
    stopper: dict[str, Any] = next(
        (v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("EarlyStopping")),
        {},
    )
    if stopper.get("stopped_epoch", 0) > 0:
        done = f"early stopping ended it after epoch {epochs}: it would stop again at once"
    elif max_epochs not in (None, -1) and epochs >= max_epochs:
        done = f"it trained all {epochs} epochs of trainer.max_epochs={max_epochs}"
    elif max_steps != -1 and steps >= max_steps:
        done = f"it reached trainer.max_steps={max_steps}"
    else:
        return
    raise ConfigError(
        f"the run in {run_dir} is finished ({done}): to train it on, raise the limit "
        f"(trainer.max_epochs=N, N > {epochs}); to test it again: python eval.py "
        f"ckpt_path={run_dir}"
    )


def relocated(config: DictConfig, old: str, new: str) -> DictConfig:
    """``config`` with every path inside run dir ``old`` moved into ``new``: a run dir that
    was moved or copied continues where it is now, and never writes to where it was."""
    if Path(old) == Path(new):
        return config

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            return new + value[len(old.rstrip("/")) :]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(config, resolve=False)))


# Keys that name where a run writes: in a config read from a checkpoint, each must lie in
# the run dir it continues in (they are relocated there from the stored run dir).
OUTPUT_KEYS = ("output_dir", "dirpath", "save_dir", "default_root_dir", "log_dir", "dir")
# Where this machine keeps caches: taken from the command line's config, never a checkpoint's.
MACHINE_PATHS = ("paths.cache_dir", "data.cache_dir")


def placed_in(config: DictConfig, run_dir: str, source: Path) -> DictConfig:
    """``config`` (read from checkpoint ``source``) writing into ``run_dir`` only: every path
    inside its stored run dir is moved into ``run_dir``; an output path anywhere else is
    refused in one line (a checkpoint decides nothing about where files go)."""
    stored = config.get("output_dir")
    if isinstance(stored, str) and stored:
        config = relocated(config, stored, run_dir)
    config.output_dir = run_dir
    for key, value in _output_paths(OmegaConf.to_container(config, resolve=False)):
        if value is None:
            continue
        inside = isinstance(value, str) and Path(value).is_absolute()
        inside = inside and Path(os.path.normpath(value)).is_relative_to(run_dir)
        if not inside:
            raise CheckpointError(
                f"the config stored in {source} names {key}={str(value)[:120]!r}, outside "
                f"the run dir it continues in ({run_dir}): a checkpoint decides nothing "
                "about where files go; refused, nothing was written"
            )
    return config


def _output_paths(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, value in node.items():
            where = f"{key}.{name}" if key else str(name)
            if name in OUTPUT_KEYS and not isinstance(value, dict | list):
                yield where, value
            else:
                yield from _output_paths(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _output_paths(value, f"{key}[{i}]")


def continues_in(cfg: DictConfig) -> bool:
    """Whether ``cfg`` continues the run whose files are in its output dir (it resumes a
    checkpoint of that dir), rather than starting a run there."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        return False
    run_dir = run_dir_of(Path(ckpt_path).resolve())
    return run_dir is not None and run_dir == Path(cfg.output_dir).resolve()


def resume_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """The config to continue a run from ``cfg.ckpt_path`` (a checkpoint, a run dir, or
    ``last``: the newest ``last.ckpt`` under ``outputs/``, i.e. the latest run), and the
    checkpoint itself.

    It is the checkpoint's own config, so the run continues exactly as it started, in its own
    output dir and, when it logged to W&B, in the same W&B run.
    """
    from mlplab.stored import (  # torch: resuming only
        MLFLOW_ID_KEY,
        WANDB_ID_KEY,
        load_checkpoint,
        run_config,
    )

    path = find_checkpoint(cfg.ckpt_path)
    checkpoint = load_checkpoint(path)
    resumed = run_config(checkpoint, path)
    # A checkpoint decides nothing about where files go: the run continues in the run dir
    # that holds it, and a loose checkpoint file (downloaded, copied alone) in a new one.
    run_dir = run_dir_of(path.resolve())
    resumed = placed_in(resumed, str(run_dir or Path(cfg.output_dir).resolve()), path)
    for key in MACHINE_PATHS:  # caches are this machine's, not the checkpoint's
        if OmegaConf.select(resumed, key) is not None and OmegaConf.select(cfg, key) is not None:
            OmegaConf.update(resumed, key, OmegaConf.select(cfg, key))
    resumed.ckpt_path = str(path)
    wandb_id = checkpoint.get(WANDB_ID_KEY)
    if wandb_id and OmegaConf.select(resumed, "logger.wandb") is not None:
        OmegaConf.update(resumed, "logger.wandb.id", wandb_id, force_add=True)
        OmegaConf.update(resumed, "logger.wandb.resume", "allow", force_add=True)
    mlflow_id = checkpoint.get(MLFLOW_ID_KEY)
    if isinstance(mlflow_id, str) and OmegaConf.select(resumed, "logger.mlflow") is not None:
        OmegaConf.update(resumed, "logger.mlflow.run_id", mlflow_id, force_add=True)
    return resumed, checkpoint


def _run_dir(ckpt_path: str | None, default: str) -> str:
    """hydra.run.dir: a resumed run's own dir (so Hydra's files and log go there), else
    ``default``."""
    if not ckpt_path:
        return default
    try:
        checkpoint = find_checkpoint(ckpt_path)
    except CheckpointError:
        return default  # train() reports it in one line
    run_dir = run_dir_of(checkpoint) if checkpoint.is_file() else None
    return str(run_dir) if run_dir is not None else default


def _hydra_subdir(ckpt_path: str | None, stamp: str) -> str:
    """hydra.output_subdir: ``.hydra``, or for a resumed run ``.hydra/resumed-<stamp>`` (the
    run's original Hydra files stay as they are)."""
    return f".hydra/resumed-{stamp}" if ckpt_path else ".hydra"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("mlplab_run_dir", _run_dir, replace=True)
    OmegaConf.register_new_resolver("mlplab_hydra_subdir", _hydra_subdir, replace=True)
