"""``callbacks=lr_find``: Lightning's learning-rate range test before training, its
suggestion printed in the run's summary and recorded in metrics.json (``lr_find/suggestion``);
with ``apply: true`` the run trains with it."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateFinder

from mlplab.record import RunRecord


class LearningRateSuggestion(LearningRateFinder):
    """Lightning's ``LearningRateFinder`` (its arguments but ``update_attr``), which needs no
    ``lr`` attribute on the module: the suggestion is recorded and, with ``apply``, set as
    each param group's learning rate (and a scheduler's base rate) before the first step.

    The test trains ``num_training_steps`` batches with a rising learning rate, from a
    checkpoint it restores afterwards, and with the random state isolated: the run then
    starts as it would have without it. A resumed run does not test again: its optimizer
    state holds the learning rate it trained with.
    """

    def __init__(self, apply: bool = False, **finder: Any) -> None:
        super().__init__(update_attr=False, **finder)
        self.apply = apply

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return
        super().on_fit_start(trainer, pl_module)
        found = self.optimal_lr.suggestion() if self.optimal_lr is not None else None
        suggestion = float(found) if found is not None else None
        applied = self.apply and suggestion is not None
        if applied:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = suggestion
                    if "initial_lr" in group:  # a scheduler's starting rate
                        group["initial_lr"] = suggestion
            for config in trainer.lr_scheduler_configs:
                config.scheduler.base_lrs = [suggestion] * len(config.scheduler.base_lrs)
        steps, low, high = self._num_training_steps, self._min_lr, self._max_lr
        tested = f"range test of {steps} steps, {low:g} to {high:g}"
        if suggestion is None:
            line = f"lr_find: no suggestion ({tested}: the loss did not fall steadily)"
        else:
            then = "trained with it" if applied else "callbacks.lr_find.apply=true trains with it"
            line = f"lr_find: suggested learning rate {suggestion:.3g} ({tested}); {then}"
        record = RunRecord.of(trainer)
        if record is not None:
            record.add("lr_find/suggestion", suggestion, console=[line])
            record.add("lr_find/applied", applied)
