"""Weights & Biases without surprises: online when logged in, otherwise offline, never a prompt."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def wandb_is_logged_in() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else ``online`` when logged in, else ``offline``."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_is_logged_in() else "offline")


def wandb_logger(mode: str = "auto", **kwargs: Any):
    """A Lightning ``WandbLogger`` whose ``mode`` is resolved by :func:`resolve_wandb_mode`.

    Every other argument goes to ``lightning.pytorch.loggers.WandbLogger`` (and from there
    to ``wandb.init``).
    """
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    mode = resolve_wandb_mode(mode)
    if kwargs.get("name") is None:
        kwargs["name"] = run_name_from_overrides()
    if kwargs.get("group") is None:
        kwargs["group"] = sweep_group()
    logger = WandbLogger(mode=mode, **kwargs)
    if mode == "offline" and rank_zero_only.rank == 0:  # other DDP ranks have no W&B run
        run_dir = os.path.dirname(logger.experiment.dir)  # .../wandb/offline-run-<time>-<id>
        print(f"W&B: not logged in, logging offline; upload later with: wandb sync {run_dir}")
    return logger


def run_name_from_overrides() -> str | None:
    """``optimizer=adam,regularization.dropout=0.5`` for a Hydra job; ``None`` (W&B picks) else."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().job.override_dirname or None


def sweep_group() -> str | None:
    """``sweep 2026-11-22/11-20-20-123456`` for the jobs of one multirun; ``None`` otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"


# What a run's W&B summary holds beyond the last logged value of each metric.
SUMMARY_KEYS = {
    "test/acc": "test/acc",
    "test/loss": "test/loss",
    "val/acc_best": "best/val_acc",
    "best_epoch": "best/epoch",
    "epochs_trained": "stop_epoch",
    "stopped_early": "stopped_early",
    "baseline/test_acc": "baseline/test_acc",
    "margin_points": "margin_points",
    "num_params": "num_params",
    "wall_s": "wall_s",
}


def log_run_to_wandb(loggers: list, metrics: dict[str, Any], images: dict[str, Any]) -> None:
    """Put the run's headline metrics into the W&B summary and upload the report pictures."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        summary = {name: metrics[key] for key, name in SUMMARY_KEYS.items() if key in metrics}
        if "doctor" in metrics:  # the training doctor's findings, one summary key each
            summary["doctor/findings"] = len(metrics["doctor"])
            summary.update({f"doctor/{f['check']}": f["message"] for f in metrics["doctor"]})
        if "from_scratch" in metrics:
            summary["from_scratch/test_acc"] = metrics["from_scratch"]["test/acc"]
        logger.experiment.summary.update(summary)
        for name, path in images.items():
            if str(path).endswith(".png"):
                logger.log_image(key=f"report/{name}", images=[str(path)])


def wandb_run_id(loggers: list) -> str | None:
    """The id of the W&B run among ``loggers``, if any (stored in checkpoints to resume it)."""
    from lightning.pytorch.loggers import WandbLogger

    ids = (lg.experiment.id for lg in loggers if isinstance(lg, WandbLogger))
    return next((i for i in ids if isinstance(i, str)), None)  # DDP ranks > 0: a dummy run


def finish_wandb(loggers: list, failed: bool) -> None:
    """Close the W&B run of any ``WandbLogger`` in ``loggers``, marked failed if training raised."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=1 if failed else 0)
