"""``evaluate(cfg) -> metrics``: test a saved checkpoint, on its own data or another data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mlplab.checkpoints import check_compatible, load_checkpoint, run_config, trust_packages
from mlplab.errors import CheckpointError, ConfigError
from mlplab.record import RunRecord
from mlplab.report import RunReport
from mlplab.runs import find_checkpoint


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the checkpoint's model, test it, write metrics.json and report.md; return them.

    The data set is the checkpoint's own (its test split), from ``data_dir`` if given, or
    ``cfg.data`` when one is chosen (``data=fashion_mnist data.data_dir=...``).
    """
    trust_packages(cfg.get("trusted_packages"))  # the command line's, never a checkpoint's
    path = find_checkpoint(cfg.ckpt_path, "best.ckpt")
    checkpoint = load_checkpoint(path)
    run_cfg = run_config(checkpoint, path)
    if "module" not in run_cfg:
        raise CheckpointError(
            f"{path} was written by an older mlplab (no module config): retrain it, or "
            "evaluate it with the mlplab version that wrote it"
        )
    datamodule = instantiate(_data_config(cfg, run_cfg))
    # The preprocessing fitted when training (a table's scaling and encoding) applies as is.
    stored = checkpoint.get(type(datamodule).__qualname__)
    if stored is not None:
        datamodule.load_state_dict(stored)
    datamodule.setup("test")
    trained = checkpoint.get("hyper_parameters", {})
    trained_for = (tuple(trained.get("input_shape", ())), trained.get("num_outputs"))
    if trained_for != (datamodule.input_shape, datamodule.num_outputs):
        raise ConfigError(
            f"{path} was trained on inputs {trained_for[0]} with {trained_for[1]} outputs, but "
            f"{datamodule.name} has inputs {datamodule.input_shape} and "
            f"{datamodule.num_outputs} outputs: evaluate it on data of the same shape and classes"
        )
    module = instantiate(
        run_cfg.module,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        task=datamodule.task,
    )
    check_compatible(checkpoint["state_dict"], module, path)
    module.load_state_dict(checkpoint["state_dict"])

    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(output_dir, run_cfg)
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


def _data_config(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The data set to test on: ``cfg.data`` if chosen, else the checkpoint's own. A table
    file chosen so (``data=table data.path=...``) is scored whole: every row, in order."""
    if cfg.get("data") is not None:
        if "test_only" in cfg.data and cfg.data.get("path"):
            return OmegaConf.merge(cfg.data, {"test_only": True})
        return cfg.data
    data = run_cfg.data
    if cfg.get("data_dir"):
        if "data_dir" not in data:
            raise ConfigError(
                f"data_dir={cfg.data_dir} does not apply: the checkpoint's data set "
                f"({data.get('name', data._target_)}) is not read from a folder; choose a data "
                "set with data=... (e.g. data=mnist data.data_dir=...)"
            )
        data = OmegaConf.merge(data, {"data_dir": cfg.data_dir})
    return data
