"""The per-epoch history that every run records."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class EpochHistory(L.Callback):
    """Record each epoch's train and val metrics, learning rate, step count and wall time.

    A row holds only what was logged in that epoch: the validation values of the last
    validation run *in* the epoch, none when the epoch had no validation
    (``check_val_every_n_epoch``, a ``max_steps`` stop before it); ``trainer.callback_metrics``
    keeps older values, which are never copied. ``step`` is the fit loop's optimizer step
    count at the epoch's end. The rows feed ``metrics.json`` and the final printout; the state
    travels with checkpoints so a resumed run keeps its whole history. ``epoch_s`` is the wall
    time of the epoch's training and validation.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.validations = 0  # validation runs during fitting (not the sanity check)
        self._started = self._ended = 0.0
        self._pending: dict[str, float] | None = None  # the epoch just ended, not yet complete
        self._val: dict[str, float] = {}  # this epoch's validation, once it ran
        self._lr: float | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)
        self._started = time.perf_counter()
        self._val = {}
        # The learning rate this epoch trains with (a scheduler steps after the epoch).
        self._lr = (
            float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The module has logged this validation's epoch values by now (its epoch-end hook runs
        # before this one); the fit loop runs a validation before its epoch ends.
        if trainer.sanity_checking:
            return
        self.validations += 1
        self._val = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        }

    # Lightning calls callbacks' on_train_epoch_end *before* the module's, where the training
    # metrics are logged, so the row of epoch e is completed when epoch e + 1 starts, or when
    # training ends (or a checkpoint is taken in between).
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ended = time.perf_counter()  # validation of this epoch has run already
        self._pending = {"epoch": trainer.current_epoch + 1, **self._val}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        row: dict[str, float] = {"epoch": self._pending.pop("epoch")}
        # Only the module's own train metrics: what else sits in callback_metrics depends on
        # which callbacks ran in this process, which differs between a resumed and a fresh run.
        row.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        )
        row.update(self._pending)
        if self._lr is not None:
            row["lr"] = self._lr
        row["step"] = trainer.global_step
        row["epoch_s"] = round(self._ended - self._started, 4)
        self.epochs.append(row)
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint saved at the end of an epoch (ModelCheckpoint runs after the module's
        # epoch-end hook) includes that epoch's row, so a resumed run keeps a complete history.
        if self._trainer is not None:
            self._record(self._trainer)
        return {
            "epochs": self.epochs,
            "lr": self._lr,
            "val": self._val,
            "validations": self.validations,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        # A run resumed mid-epoch skips on_train_epoch_start: keep the epoch's learning rate
        # and its validation so far, and time the rest of the epoch from now.
        self._lr = state_dict.get("lr")
        self._val = dict(state_dict.get("val", {}))
        self.validations = int(state_dict.get("validations", 0))
        self._started = time.perf_counter()
