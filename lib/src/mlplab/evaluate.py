"""``evaluate(cfg) -> metrics``: test a saved checkpoint, on its own data or another data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mlplab.errors import ConfigError
from mlplab.record import RunRecord
from mlplab.report import RunReport
from mlplab.rundir import writing_run_dir
from mlplab.stored import trust_packages
from mlplab.trained import TrainedModel, load_trained


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the checkpoint's model, test it, write metrics.json and report.md; return them.

    The data set is the checkpoint's own (its test split), from ``data_dir`` if given, or
    ``cfg.data`` when one is chosen (``data=fashion_mnist data.data_dir=...``).
    """
    trust_packages(cfg.get("trusted_packages"), cfg)  # the command line's, never a checkpoint's
    trained = load_trained(cfg.ckpt_path, cache_dir=cfg.paths.cache_dir)
    path, module = trained.path, trained.module
    datamodule = trained.test_data(_data_config(cfg, trained))
    trained_for = (trained.input_shape, module.hparams.num_outputs)
    if trained_for != (datamodule.input_shape, datamodule.num_outputs):
        raise ConfigError(
            f"{path} was trained on inputs {trained_for[0]} with {trained_for[1]} outputs, but "
            f"{datamodule.name} has inputs {datamodule.input_shape} and "
            f"{datamodule.num_outputs} outputs: evaluate it on data of the same shape and classes"
        )

    output_dir = Path(cfg.output_dir)
    with writing_run_dir(output_dir, command="eval.py"):  # never a training run's files
        return _test(cfg, trained, datamodule, output_dir)


def _test(
    cfg: DictConfig, trained: TrainedModel, datamodule: L.LightningDataModule, output_dir: Path
) -> dict[str, Any]:
    path, module = trained.path, trained.module
    record = RunRecord(output_dir, trained.config)
    record.add("checkpoint", str(path))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        callbacks=[record, RunReport()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)  # weights loaded above
    return record.metrics


def _data_config(cfg: DictConfig, trained: TrainedModel) -> DictConfig:
    """The data set to test on: ``cfg.data`` if chosen, else the checkpoint's own. A table
    file chosen so (``data=table data.path=...``) is scored whole: every row, in order."""
    if cfg.get("data") is not None:
        if "test_only" in cfg.data and cfg.data.get("path"):
            return cast(DictConfig, OmegaConf.merge(cfg.data, {"test_only": True}))
        return cfg.data
    return trained.data_config(cfg.get("data_dir"))
