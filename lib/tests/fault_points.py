"""A callback that holds a run at one point until a signal reaches it: fault tests send their
signal when its marker file appears, so the signal lands in that phase on any machine."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from mlplab.checkpoints import RunStateInCheckpoint


class PauseAt(L.Callback):
    """At ``phase`` of epoch ``epoch`` (1 = the first), write ``marker`` and wait until the
    run has noted a signal (or is killed). Once only: a resumed run with the marker passes.

    Phases: ``train_batch`` (the third batch), ``validation`` (after its first batch),
    ``checkpoint`` (while the epoch's checkpoint is being made), ``test`` (after the first
    test batch). With ``on_resume`` (a second marker), a run resumed from a checkpoint also
    holds as its training starts (its loggers set up), once.
    """

    def __init__(
        self,
        phase: str,
        marker: str,
        epoch: int = 2,
        timeout_s: float = 300,
        on_resume: str | None = None,
    ) -> None:
        self.phase, self.marker, self.epoch, self.timeout_s = phase, Path(marker), epoch, timeout_s
        self.on_resume = Path(on_resume) if on_resume else None

    def on_train_start(self, trainer, pl_module):
        if self.on_resume is None or self.on_resume.exists() or not trainer.ckpt_path:
            return
        self.on_resume.write_text("resumed")
        self._wait(trainer)

    def _pause(self, trainer: L.Trainer, phase: str) -> None:
        if phase != self.phase or self.marker.exists():
            return
        if phase != "test" and (trainer.sanity_checking or trainer.current_epoch != self.epoch - 1):
            return
        self.marker.write_text(phase)
        self._wait(trainer)

    def _wait(self, trainer: L.Trainer) -> None:
        state = next(c for c in trainer.callbacks if isinstance(c, RunStateInCheckpoint))
        deadline = time.monotonic() + self.timeout_s
        while state.stop_signals.received is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the signal handler runs between these

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            self._pause(trainer, "train_batch")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if batch_idx == 0:
            self._pause(trainer, "validation")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._pause(trainer, "checkpoint")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if batch_idx == 0:
            self._pause(trainer, "test")
