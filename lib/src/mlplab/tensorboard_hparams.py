"""TensorBoard's HParams tab with the run's results: Lightning's ``TensorBoardLogger`` writes the
hyperparameters when training starts, before any result exists (its placeholder ``hp_metric``
of -1, or nothing with ``default_hp_metric: false``), so the tab lists runs without metrics
(Lightning #1111, #5101). Here the config is written again once the run is tested, with its
final figures: the tab then compares runs by them."""

from __future__ import annotations

from typing import Any

import lightning as L

from mlplab.record import RunRecord, finite_number


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures of a run's record that compare runs: test metrics, the best validation
    values (``*_best``), the baseline and margin, the epochs trained; finite numbers only."""
    kept = {}
    for key, value in metrics.items():
        headline = key.startswith(("test/", "baseline/")) or key.endswith("_best")
        headline |= key in ("margin_points", "best_epoch", "epochs_trained")
        if headline and finite_number(value):
            kept[key] = float(value)
    return kept


class TensorBoardHParams(L.Callback):
    """Write the run's config with its final figures (:func:`final_metrics`) to each
    ``TensorBoardLogger`` when testing is over; does nothing without one."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        record = RunRecord.of(trainer)
        if stage != "test" or record is None or not trainer.is_global_zero:
            return
        metrics = final_metrics(record.metrics)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and metrics:
                logger.log_hyperparams(record.config, metrics=metrics, step=trainer.global_step)
