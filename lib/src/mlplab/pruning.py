"""The job's side of an Optuna study during training: the optimized metric reported to the
job's trial at each validation, and a clean stop when the study's pruner says so."""

from __future__ import annotations

from typing import Any

import lightning as L

from mlplab.record import RunRecord
from mlplab.studies import JobTrial


class TrialReporting(L.Callback):
    """Report the optimized metric to the job's trial at each validation (the study's
    intermediate values: its pruner's input and the dashboard's curves), and stop training
    cleanly when the pruner says so: ``pruned`` in ``metrics.json``, and the trial PRUNED.

    Args:
        trial: the job's trial (:meth:`JobTrial.of_this_job`).
        monitor: the metric the study optimizes (``optimized_metric``).
    """

    def __init__(self, trial: JobTrial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None
        self.best: float | None = None  # the running best, for a ``<metric>_best`` monitor

    def _value(self, trainer: L.Trainer) -> float | None:
        """The monitored metric now: logged, or (``val/acc_best``, which the run computes at
        its end) the best of ``val/acc`` so far, in the study's direction."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            return float(value)
        measured = trainer.callback_metrics.get(self.monitor.removesuffix("_best"))
        if not self.monitor.endswith("_best") or measured is None:
            return None
        pick = max if self.trial.study.direction.name == "MAXIMIZE" else min
        self.best = pick(float(measured), self.best if self.best is not None else float(measured))
        return self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        value = self._value(trainer)
        prune = False
        if trainer.is_global_zero and value is not None:
            prune = self.trial.report(value, trainer.current_epoch + 1)
        if trainer.strategy.broadcast(prune):  # every DDP rank stops together
            self.pruned_epoch = trainer.current_epoch + 1
            trainer.should_stop = True
            record = RunRecord.of(trainer)
            if record is not None:
                record.add(
                    "pruned",
                    {"epoch": self.pruned_epoch, "pruner": self.trial.pruner},
                    console=[
                        f"trial {self.trial.number}: the study's {self.trial.pruner} pruner "
                        f"stopped it after epoch {self.pruned_epoch}"
                    ],
                )


def trial_callbacks(monitor: Any) -> list[L.Callback]:
    """:class:`TrialReporting` for a job of a single-objective Optuna sweep (Optuna prunes
    those only); nothing for any other run."""
    trial = JobTrial.of_this_job() if isinstance(monitor, str) and monitor else None
    return [TrialReporting(trial, monitor)] if trial is not None else []
