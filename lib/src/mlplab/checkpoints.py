"""What mlplab adds to Lightning checkpoints (read back by :mod:`mlplab.stored`).

A checkpoint carries the resolved run config (so it rebuilds its own model), the W&B run id
(so a resumed run continues the same W&B run) and the random number generators' states (so
that dropout after a resume draws exactly what an uninterrupted run would have drawn).
"""

from __future__ import annotations

import io
import os
import random
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mlplab.errors import InterruptedWhenDone, JobRequeued, RunInterrupted
from mlplab.resume import newest_checkpoint, resume_command
from mlplab.rundir import atomic_file
from mlplab.signals import request_stop, signal_name, stop_requested
from mlplab.slurm import RequeueOnSignal, requeued_by_slurm
from mlplab.stored import CONFIG_KEY, MLFLOW_ID_KEY, PROJECT_KEY, WANDB_ID_KEY, project_packages

RNG_KEY = "mlplab_rng_states"


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, as plain types and tensors."""
    np_state: Any = np.random.get_state()  # the legacy tuple (name, keys, pos, ...)
    states = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs the nested tuples that a round trip through a checkpoint may list."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM, turned into a stop that a checkpoint resumes exactly from.

    Lightning stops on SIGTERM after a batch but also in the middle of a validation or at an
    epoch's end (from either, the resumed run lacks a validation), and turns Ctrl-C into a
    ``KeyboardInterrupt`` anywhere, even mid-batch, then into exit status 1. Here a signal
    is only noted; the stop is handed to Lightning's own mechanism (its ``received_sigterm``
    flag, which its loops check) after the next training batch that ends inside an epoch
    (:meth:`RunStateInCheckpoint.on_train_batch_end`). While testing it is handed over at
    once: an interrupted test is redone whole on resume. A second signal is ignored.
    With several DDP processes Lightning's own handling stays (all ranks must stop together).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal_name(self.received or signal.SIGTERM)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGTERM)

    def install(self, trainer: L.Trainer | None = None) -> None:
        """Handle the signals (again: Lightning installs its own at each stage's start)."""
        self._trainer = trainer or self._trainer
        if self._trainer is not None and self._trainer.world_size > 1:
            return
        if self.received is None:  # asked before this training began (a sweep's, mlplab.signals)
            self.received = stop_requested()
        for signum in self.SIGNALS:
            try:
                previous = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: signals cannot be handled here
                return
            self._previous.setdefault(signum, previous)
        if self._trainer is not None and self._trainer.testing:
            self.hand_over()

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            return  # already stopping: a second Ctrl-C changes nothing
        self.received = signum
        request_stop(signum)  # the sweep around the run, if any, starts no more jobs
        # os.write, not print: a signal handler may interrupt a print of the main code.
        os.write(
            2, f"{self.name}: stopping at the next batch boundary, to save a checkpoint\n".encode()
        )
        if self._trainer is not None and self._trainer.testing:
            self.hand_over()

    def hand_over(self, stop: bool = True) -> None:
        """Let (or, with ``stop=False``, not yet let) Lightning's loops stop on the signal."""
        if self.received is not None and self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = stop


class RunStateInCheckpoint(L.Callback):
    """Write the run config, W&B run id and RNG states into every checkpoint; restore the RNGs.

    On Ctrl-C or SIGTERM (``scancel``, preemption) it stops at a batch boundary
    (:class:`StopSignals`) and saves ``interrupted.ckpt`` next to the other checkpoints, so no
    finished batch is lost and the resumed run ends with the uninterrupted run's metrics.
    Under SLURM the requeue signal does the same and then requeues the job, which continues
    from that checkpoint by itself (:mod:`mlplab.slurm`).

    Args:
        config: the run config to store (secrets redacted: see :mod:`mlplab.secrets`).
        checkpoint_dir: where ``interrupted.ckpt`` goes.
        wandb_run_id: the W&B run to continue on resume.
        mlflow_run_id: the MLflow run to continue on resume.
        resumes: the checkpoint this run continues, if it does.
    """

    def __init__(
        self,
        config: dict[str, Any],
        checkpoint_dir: Path,
        wandb_run_id: str | None = None,
        mlflow_run_id: str | None = None,
        resumes: str | None = None,
    ):
        self.config, self.wandb_run_id, self.mlflow_run_id = config, wandb_run_id, mlflow_run_id
        self.resumes = resumes
        self.checkpoint_dir = Path(checkpoint_dir)
        self.interrupted_checkpoint: Path | None = None
        self.interrupted_epoch = 0
        self.interrupted_by_sigint = False
        self.requeue_signal = RequeueOnSignal()
        self.stop_signals = StopSignals()

    @contextmanager
    def resume_hint(self) -> Iterator[None]:
        """Turn Ctrl-C or SIGTERM during the block into :class:`RunInterrupted` (exit 130 or
        143), whose one line says how to resume; requeue a SLURM job that got the requeue
        signal. A signal during testing also ends so: the resumed run tests again."""
        self.stop_signals.install()
        try:
            yield
        except (KeyboardInterrupt, SystemExit) as exc:  # Lightning: SIGTERM/Ctrl-C -> SystemExit
            if self.interrupted_checkpoint is None and not self._signalled(exc):
                raise
            self._raise_interrupted(exc)
        finally:
            self.stop_signals.uninstall()
            self.requeue_signal.uninstall()
            if self.stop_signals.received is not None or self.interrupted_checkpoint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting: no Ctrl-C in atexit
        if self.stop_signals.received is not None:  # after testing: every output is written
            raise InterruptedWhenDone(
                f"{self.stop_signals.name} arrived as the run was finishing; it is complete "
                f"(metrics.json, report.md): {self.checkpoint_dir.parent}",
                exit_code=self.stop_signals.exit_code,
            )

    def _signalled(self, exc: BaseException) -> bool:
        return self.stop_signals.received is not None or isinstance(
            exc, KeyboardInterrupt | SIGTERMException
        )

    def _raise_interrupted(self, exc: BaseException) -> None:
        sigint = self.stop_signals.received == signal.SIGINT or self.interrupted_by_sigint
        signal_name, code = ("Ctrl-C", 130) if sigint else ("SIGTERM", 143)
        if self.interrupted_checkpoint is None:  # in testing: training is complete
            run_dir = self.checkpoint_dir.parent
            again = newest_checkpoint(run_dir)
            how = (
                f"finish it with: {resume_command(run_dir)}"
                if again is not None
                else "no checkpoint was kept (enable_checkpointing=false): run it again"
            )
            raise RunInterrupted(
                f"testing interrupted by {signal_name}; training is complete, {how}", code
            ) from None
        received = self.requeue_signal.received
        if received is not None:
            signal_name = signal.Signals(received).name
        stopped = f"training interrupted by {signal_name} in epoch {self.interrupted_epoch}"
        if received is not None or (not sigint and requeued_by_slurm()):
            # submitit's requeue does not return: it resubmits the job and exits
            requeued = self.requeue_signal.requeue(self.interrupted_checkpoint)
            raise JobRequeued(f"{stopped}; checkpoint saved, {requeued}", code) from None
        raise RunInterrupted(
            f"{stopped}; checkpoint saved, "
            f"resume with: {resume_command(self.interrupted_checkpoint)}",
            exit_code=code,
        ) from None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A resumed run's data module gets its saved state first: Lightning restores it only
        # after the weights, so a data module that finds its data changed since (a table with
        # other rows or categories) would otherwise be preceded by a weight-shape error.
        datamodule = trainer.datamodule
        if stage != "fit" or not self.resumes or datamodule is None:
            return
        state = torch.load(self.resumes, map_location="cpu", weights_only=True, mmap=True)
        saved = state.get(type(datamodule).__qualname__)
        if saved is not None:
            datamodule.load_state_dict(saved)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requeue_signal.install()
        for folder in (
            self.checkpoint_dir,
            self.checkpoint_dir.parent,
            self.checkpoint_dir.parent / "csv",
        ):
            remove_stale_parts(folder)

    # Lightning installs its SIGTERM handler after on_fit_start, before these: ours goes on top.
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signals.install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signals.install(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signals.install(trainer)

    # A noted signal becomes Lightning's stop after a training batch that is not the epoch's
    # last: Lightning resumes such a mid-epoch checkpoint exactly, while one taken after an
    # epoch's end makes it skip the next epoch's validation. A validation runs to its end.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        batches = trainer.num_training_batches
        if batch_idx + 1 < batches or batches == 1:  # one batch an epoch: no better place
            self.stop_signals.hand_over()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signals.hand_over(stop=False)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[PROJECT_KEY] = list(project_packages())
        checkpoint[WANDB_ID_KEY] = self.wandb_run_id
        checkpoint[MLFLOW_ID_KEY] = self.mlflow_run_id
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if RNG_KEY in checkpoint and trainer.state.fn == "fit":
            set_rng_states(checkpoint[RNG_KEY])

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if (
            isinstance(exception, KeyboardInterrupt | SIGTERMException)
            and trainer.state.fn == "fit"
        ):
            path = self.checkpoint_dir / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            self.interrupted_checkpoint = path
            self.interrupted_by_sigint = isinstance(exception, KeyboardInterrupt)
            self.interrupted_epoch = trainer.current_epoch + 1


def remove_stale_parts(folder: Path) -> None:
    """Delete the temporary files of writes that a kill interrupted (checkpoints, metrics,
    reports, the CSV): a run dir has one writer (:mod:`mlplab.rundir`), so none is being
    written as a run starts."""
    for part in folder.glob(".*.part"):
        part.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: the checkpoint goes to a temporary file in
    the same folder, is flushed to disk (fsync) and renamed over the old one. A kill, a crash
    or a full disk during the write leaves the previous checkpoint as it was. It reads
    checkpoints with ``weights_only=True`` whatever Lightning asks (Lightning asks for
    ``False`` for a URL): a checkpoint is data and never runs code when the Trainer loads it."""

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        # Serialized in memory first (as Lightning does): torch's zip writer turns a failed
        # write into an opaque RuntimeError, a plain file write gives the OS error (ENOSPC).
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_file(path, "wb") as file:  # temporary name, fsync, rename, fsync the dir
            file.write(buffer.getbuffer())


def tested_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint ``trainer.test`` should load: the best one, if fitting saved one."""
    callback = trainer.checkpoint_callback
    return (callback.best_model_path or None) if callback is not None else None
