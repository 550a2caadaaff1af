"""``train(cfg) -> metrics``: the whole run as one pure function of the config.

The data module is loaded first (it knows its shapes and its task), the LightningModule is
built for it, and the Trainer (with mlplab's callbacks and the configured loggers) fits, then
tests the best checkpoint. The run around it (continuing a checkpoint's run, one writer per
run dir, seeding, the files it leaves) is mlplab's :class:`~mlplab.training.TrainingRun`.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from mlplab.training import TrainingRun
from omegaconf import DictConfig


def train(cfg: DictConfig) -> dict[str, Any]:
    """Seed, build, fit, test the best checkpoint; return the metrics (also in metrics.json)."""
    with TrainingRun(cfg, flow=train) as run:
        datamodule = instantiate(run.cfg.data)
        datamodule.setup("fit")  # loaded now: the network's shape comes from the data
        cfg = run.for_task(datamodule.task)  # a regression table: module=regressor, loss=mse
        module = instantiate(
            cfg.module,
            input_shape=datamodule.input_shape,
            num_outputs=datamodule.num_outputs,
            task=datamodule.task,
        )
        trainer = run.trainer()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        trainer.test(
            module, datamodule=datamodule, ckpt_path=run.tested_checkpoint(trainer), verbose=False
        )
    return run.metrics
