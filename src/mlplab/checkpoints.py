"""What mlplab adds to Lightning checkpoints, and reading it back safely.

A checkpoint carries the resolved run config (so it rebuilds its own model), the W&B run id
(so a resumed run continues the same W&B run) and the random number generators' states (so
that dropout after a resume draws exactly what an uninterrupted run would have drawn).
"""

from __future__ import annotations

import io
import os
import random
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mlplab.errors import CheckpointError, JobRequeued, RunInterrupted
from mlplab.runs import find_checkpoint, resume_command
from mlplab.slurm import (
    RequeueOnSignal,
    requeued_by_slurm,
    requeued_checkpoint,
    restart_count,
)

CONFIG_KEY = "mlplab_config"
WANDB_ID_KEY = "mlplab_wandb_run_id"
RNG_KEY = "mlplab_rng_states"


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, as plain types and tensors."""
    np_state = np.random.get_state()
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


class RunStateInCheckpoint(L.Callback):
    """Write the run config, W&B run id and RNG states into every checkpoint; restore the RNGs.

    On Ctrl-C or SIGTERM (``scancel``, preemption) it also saves ``interrupted.ckpt`` next to
    the other checkpoints, so no finished batch is lost. Under SLURM the requeue signal does
    the same and then requeues the job, which continues from that checkpoint by itself
    (:mod:`mlplab.slurm`).

    Args:
        config: the run config to store (secrets redacted: see :mod:`mlplab.secrets`).
        checkpoint_dir: where ``interrupted.ckpt`` goes.
        wandb_run_id: the W&B run to continue on resume.
    """

    def __init__(
        self, config: dict[str, Any], checkpoint_dir: Path, wandb_run_id: str | None = None
    ):
        self.config, self.wandb_run_id = config, wandb_run_id
        self.checkpoint_dir = Path(checkpoint_dir)
        self.interrupted_checkpoint: Path | None = None
        self.interrupted_epoch = 0
        self.requeue_signal = RequeueOnSignal()

    @contextmanager
    def resume_hint(self) -> Iterator[None]:
        """Turn Ctrl-C or SIGTERM during the block into :class:`RunInterrupted`, whose one line
        says how to resume from the saved ``interrupted.ckpt``; requeue a SLURM job that got
        the requeue signal."""
        try:
            yield
        except (KeyboardInterrupt, SIGTERMException) as exc:  # Lightning: SIGTERM -> exit(1)
            if self.interrupted_checkpoint is None:
                raise
            sigterm = isinstance(exc, SIGTERMException)
            signal_name, code = ("SIGTERM", 143) if sigterm else ("Ctrl-C", 130)
            received = self.requeue_signal.received
            if received is not None:
                signal_name = signal.Signals(received).name
            stopped = f"training interrupted by {signal_name} in epoch {self.interrupted_epoch}"
            if received is not None or (sigterm and requeued_by_slurm()):
                # submitit's requeue does not return: it resubmits the job and exits
                requeued = self.requeue_signal.requeue(self.interrupted_checkpoint)
                raise JobRequeued(f"{stopped}; checkpoint saved, {requeued}", code) from None
            raise RunInterrupted(
                f"{stopped}; checkpoint saved, "
                f"resume with: {resume_command(self.interrupted_checkpoint)}",
                exit_code=code,
            ) from None
        finally:
            self.requeue_signal.uninstall()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requeue_signal.install()  # now: Lightning has set up its SIGTERM handling

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[WANDB_ID_KEY] = self.wandb_run_id
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
            self.interrupted_epoch = trainer.current_epoch + 1


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: the checkpoint goes to a temporary file in
    the same folder, is flushed to disk (fsync) and renamed over the old one. A kill, a crash
    or a full disk during the write leaves the previous checkpoint as it was."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Serialized in memory first (as Lightning does): torch's zip writer turns a failed
        # write into an opaque RuntimeError, a plain file write gives the OS error (ENOSPC).
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)  # the rename itself survives a power cut


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders: nothing more to do there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tested_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint ``trainer.test`` should load: the best one, if fitting saved one."""
    callback = trainer.checkpoint_callback
    return (callback.best_model_path or None) if callback is not None else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` (no code runs); clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file: report them all alike
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from exc


def run_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    """The resolved training config stored in a checkpoint."""
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} holds no mlplab config: it was not written by mlplab's train.py"
        )
    return OmegaConf.create(checkpoint[CONFIG_KEY])


def load_run_config(path: str | Path) -> DictConfig:
    return run_config(load_checkpoint(path), path)


def check_compatible(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, path: str | Path
) -> None:
    """Raise ``CheckpointError`` listing each layer whose name or shape differs from the model."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state_dict.items()}
    problems = [
        f"{name}: checkpoint {found.get(name, 'missing')} vs model {expected.get(name, 'missing')}"
        for name in sorted(expected.keys() | found.keys())
        if expected.get(name) != found.get(name)
    ]
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems))


def continued_config(cfg: DictConfig) -> DictConfig:
    """The config to run: ``cfg``, or, to continue a run, the config stored in its checkpoint:
    with ``ckpt_path`` set, or in a SLURM job that was requeued after it saved a checkpoint
    in its own run dir (never another run's)."""
    if not cfg.get("ckpt_path"):
        checkpoint = requeued_checkpoint(cfg.output_dir)
        if checkpoint is None:
            return cfg
        cfg = cfg.copy()
        cfg.ckpt_path = str(checkpoint)
        print(f"SLURM requeued this job (restart {restart_count()}): continuing it")
    resumed = resume_config(cfg)
    print(f"resuming {resumed.output_dir} from {resumed.ckpt_path} with the config stored in it")
    return resumed


def resume_config(cfg: DictConfig) -> DictConfig:
    """The config to continue a run from ``cfg.ckpt_path``: a checkpoint, a run dir, or
    ``last`` (the newest ``last.ckpt`` under ``outputs/``, i.e. the latest run).

    It is the checkpoint's own config, so the run continues exactly as it started, in its own
    output dir and, when it logged to W&B, in the same W&B run.
    """
    path = find_checkpoint(cfg.ckpt_path)
    checkpoint = load_checkpoint(path)
    resumed = run_config(checkpoint, path)
    resumed.ckpt_path = str(path)
    wandb_id = checkpoint.get(WANDB_ID_KEY)
    if wandb_id and OmegaConf.select(resumed, "logger.wandb") is not None:
        OmegaConf.update(resumed, "logger.wandb.id", wandb_id, force_add=True)
        OmegaConf.update(resumed, "logger.wandb.resume", "allow", force_add=True)
    return resumed
