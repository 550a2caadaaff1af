"""Callbacks that every run gets: the per-epoch history and the config inside checkpoints."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class EpochHistory(L.Callback):
    """Record each epoch's logged metrics (train and val), learning rate and wall time.

    The rows feed ``metrics.json`` and the final printout; the state travels with checkpoints
    so a resumed run keeps its whole history. ``epoch_s`` is the wall time of the epoch's
    training and validation.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._started = self._ended = 0.0
        self._pending_epoch: int | None = None

    # A row is written once the epoch is completely over: Lightning calls callbacks'
    # on_train_epoch_end *before* the module's, where the training metrics are logged, so the
    # row of epoch e is written when epoch e + 1 starts, or when training ends.
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = time.perf_counter()  # validation of this epoch has run already
        self._pending_epoch = trainer.current_epoch + 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        if self._pending_epoch is None:
            return
        row: dict[str, float] = {"epoch": self._pending_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["epoch_s"] = round(self._ended - self._started, 4)
        self.epochs.append(row)
        self._pending_epoch = None

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])


class ConfigInCheckpoint(L.Callback):
    """Store the resolved run config in every checkpoint, so a checkpoint rebuilds its model."""

    KEY = "mlplab_config"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[self.KEY] = self.config
