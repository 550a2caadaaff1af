"""``evaluate(cfg) -> metrics``: test a saved checkpoint with the config it was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from mlplab.checkpoints import check_compatible, load_checkpoint, run_config
from mlplab.train import _test_metrics, build, print_summary, write_metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the checkpoint's data and model, run the test set, write and return the metrics."""
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run_cfg = run_config(checkpoint, cfg.ckpt_path)
    if cfg.get("data_dir"):
        run_cfg.data.data_dir = cfg.data_dir
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datamodule, model = build(run_cfg)
    check_compatible(checkpoint.get("state_dict", {}), model, cfg.ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    (test,) = trainer.test(model, datamodule=datamodule, verbose=False)  # weights loaded above
    metrics = {
        **_test_metrics(test, datamodule.baseline_accuracy()),
        "checkpoint": str(cfg.ckpt_path),
    }
    write_metrics(metrics, output_dir)
    print_summary(metrics, output_dir)
    return metrics
