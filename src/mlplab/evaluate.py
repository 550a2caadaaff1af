"""``evaluate(cfg) -> metrics``: test a saved checkpoint with the config it was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from mlplab.callbacks import ConfigInCheckpoint
from mlplab.errors import CheckpointError
from mlplab.train import _test_metrics, build, print_summary, write_metrics


def load_run_config(ckpt_path: str | Path) -> DictConfig:
    """The resolved training config stored in a checkpoint by :class:`ConfigInCheckpoint`."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file: report them all alike
        raise CheckpointError(f"cannot load checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if ConfigInCheckpoint.KEY not in checkpoint:
        raise CheckpointError(
            f"{path} holds no mlplab config: it was not written by mlplab's train.py"
        )
    return OmegaConf.create(checkpoint[ConfigInCheckpoint.KEY])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the checkpoint's data and model, run the test set, write and return the metrics."""
    run_cfg = load_run_config(cfg.ckpt_path)
    if cfg.get("data_dir"):
        run_cfg.data.data_dir = cfg.data_dir
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datamodule, model = build(run_cfg)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    (test,) = trainer.test(
        model, datamodule=datamodule, ckpt_path=str(cfg.ckpt_path), verbose=False
    )
    metrics = {
        **_test_metrics(test, datamodule.baseline_accuracy()),
        "checkpoint": str(cfg.ckpt_path),
    }
    write_metrics(metrics, output_dir)
    print_summary(metrics, output_dir)
    return metrics
