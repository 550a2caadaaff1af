"""Weights & Biases without surprises: online when logged in, otherwise offline, never a prompt."""

from __future__ import annotations

import logging
import netrc
import os
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

    mode = resolve_wandb_mode(mode)
    logger = WandbLogger(mode=mode, **kwargs)
    if mode == "offline":
        run_dir = os.path.dirname(logger.experiment.dir)  # .../wandb/offline-run-<time>-<id>
        print(f"W&B: not logged in, logging offline; upload later with: wandb sync {run_dir}")
    return logger


def finish_wandb(loggers: list, failed: bool) -> None:
    """Close the W&B run of any ``WandbLogger`` in ``loggers``, marked failed if training raised."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=1 if failed else 0)
