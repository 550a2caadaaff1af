"""The per-epoch history that every run records."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class EpochHistory(L.Callback):
    """Record each epoch's train and val metrics, learning rate and wall time.

    The rows feed ``metrics.json`` and the final printout; the state travels with checkpoints
    so a resumed run keeps its whole history. ``epoch_s`` is the wall time of the epoch's
    training and validation.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._started = self._ended = 0.0
        self._pending_epoch: int | None = None
        self._lr: float | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    # A row is written once the epoch is completely over: Lightning calls callbacks'
    # on_train_epoch_end *before* the module's, where the training metrics are logged, so the
    # row of epoch e is written when epoch e + 1 starts, or when training ends.
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)
        self._started = time.perf_counter()
        # The learning rate this epoch trains with (a scheduler steps after the epoch).
        self._lr = (
            float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = time.perf_counter()  # validation of this epoch has run already
        self._pending_epoch = trainer.current_epoch + 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        if self._pending_epoch is None:
            return
        row: dict[str, float] = {"epoch": self._pending_epoch}
        # Only the module's own train/val metrics: what else sits in callback_metrics depends on
        # which callbacks ran in this process, which differs between a resumed and a fresh run.
        row.update(
            {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith(("train/", "val/"))
            }
        )
        if self._lr is not None:
            row["lr"] = self._lr
        row["epoch_s"] = round(self._ended - self._started, 4)
        self.epochs.append(row)
        self._pending_epoch = None

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint saved at the end of an epoch (ModelCheckpoint runs after the module's
        # epoch-end hook) includes that epoch's row, so a resumed run keeps a complete history.
        if self._trainer is not None:
            self._record(self._trainer)
        return {"epochs": self.epochs, "lr": self._lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        # A run resumed mid-epoch skips on_train_epoch_start: keep the epoch's learning rate,
        # and time the rest of the epoch from now.
        self._lr = state_dict.get("lr")
        self._started = time.perf_counter()
