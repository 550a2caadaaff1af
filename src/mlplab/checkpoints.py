"""What mlplab adds to Lightning checkpoints, and reading it back safely.

A checkpoint carries the resolved run config (so it rebuilds its own model), the W&B run id
(so a resumed run continues the same W&B run) and the random number generators' states (so
that dropout after a resume draws exactly what an uninterrupted run would have drawn).
"""

from __future__ import annotations

import io
import os
import pickle
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

from mlplab.config import CONF_DIR
from mlplab.errors import CheckpointError, ConfigError, JobRequeued, RunInterrupted
from mlplab.runs import find_checkpoint, newest_checkpoint, resume_command, run_dir_of
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
        return "Ctrl-C" if self.received == signal.SIGINT else "SIGTERM"

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGTERM)

    def install(self, trainer: L.Trainer | None = None) -> None:
        """Handle the signals (again: Lightning installs its own at each stage's start)."""
        self._trainer = trainer or self._trainer
        if self._trainer is not None and self._trainer.world_size > 1:
            return
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
    """

    def __init__(
        self, config: dict[str, Any], checkpoint_dir: Path, wandb_run_id: str | None = None
    ):
        self.config, self.wandb_run_id = config, wandb_run_id
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
            raise RunInterrupted(
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

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requeue_signal.install()
        remove_stale_parts(self.checkpoint_dir)

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
            self.interrupted_by_sigint = isinstance(exception, KeyboardInterrupt)
            self.interrupted_epoch = trainer.current_epoch + 1


def remove_stale_parts(folder: Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill interrupted (a run writes
    its checkpoints from one process, so none is being written as a run starts)."""
    for part in folder.glob(".*.part"):
        part.unlink(missing_ok=True)


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
    except pickle.UnpicklingError as exc:
        # Not torch's advice to retry with weights_only=False: that runs the file's code.
        raise CheckpointError(
            f"cannot load checkpoint {path}: it holds Python objects other than tensors and "
            "plain values, which mlplab never unpickles (they can run code); use a checkpoint "
            "written by mlplab's train.py"
        ) from exc
    except Exception as exc:  # torch raises many types for a bad file: report them all alike
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from exc


# The packages whose objects a run builds from a config. A config read from a checkpoint may
# name only these (plus the user's own, ``trusted_packages`` in conf/trusted/default.yaml):
# it is data from a file, and Hydra would call whatever its ``_target_`` names.
BUILT_IN_PACKAGES = ("mlplab", "torch", "torchmetrics", "lightning")
# ... except these parts of them, which read or write files or load code.
UNSAFE_TARGETS = (
    "torch.load",
    "torch.save",
    "torch.hub",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch.ops.load_library",
    "torch.classes.load_library",
)
_trusted: list[str] = []


def trust_packages(packages: Any) -> None:
    """Add the user's own packages (the run's ``trusted_packages``) to those a stored config
    may build from. Called with the command line's config, never a checkpoint's."""
    _trusted[:] = [str(p) for p in (packages or [])]


def check_targets(config: Any, source: str, key: str = "") -> None:
    """Refuse, in one line naming the key and the target, any ``_target_`` in ``config`` (a
    config read from ``source``) outside the trusted packages, before anything is built."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    if isinstance(config, dict):
        for name, value in config.items():
            where = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                _check_target(str(value), source, where)
            else:
                check_targets(value, source, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            check_targets(value, source, f"{key}[{i}]")


def _check_target(target: str, source: str, key: str) -> None:
    packages = (*BUILT_IN_PACKAGES, *_trusted)
    root = target.split(".")[0]
    unsafe = any(target == t or target.startswith(t + ".") for t in UNSAFE_TARGETS)
    if root in packages and not unsafe:
        return
    shown = target if len(target) <= 80 else target[:77] + "..."
    raise CheckpointError(
        f"{source} names {key}={shown}, outside the packages a stored config may build from "
        f"({', '.join(packages)}; add your own with trusted_packages=[...]): refused, nothing "
        "was built"
    )


def run_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    """The resolved training config stored in a checkpoint, checked: every ``_target_`` in it
    is in a trusted package (:func:`check_targets`)."""
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} holds no mlplab config: it was not written by mlplab's train.py"
        )
    stored = checkpoint[CONFIG_KEY]
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: its stored config is not a mapping")
    check_targets(stored, f"the config stored in {path}")
    return OmegaConf.create(stored)


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


# What a resumed run may change: how long it trains, and how much it prints. Anything else
# would make it another run than the one its checkpoint belongs to.
RESUME_OVERRIDABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "torch_threads",
    "verbose",
)


def continued_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """The config to run: ``cfg``, or, to continue a run, the config stored in its checkpoint:
    with ``ckpt_path`` set, or in a SLURM job that was requeued after it saved a checkpoint
    in its own run dir (never another run's).

    ``overrides`` (the command line's ``key=value``; by default Hydra's) may extend the run
    (``trainer.max_epochs=N``) or quiet it (:data:`RESUME_OVERRIDABLE`); one that would change
    anything else is refused in one line, as is continuing a run that has nothing left to do.
    Called without Hydra (``train(cfg)`` from Python), ``cfg``'s own values of those keys
    are the ones asked for.
    """
    trust_packages(cfg.get("trusted_packages"))  # the command line's, never a checkpoint's
    if not cfg.get("ckpt_path"):
        checkpoint = requeued_checkpoint(cfg.output_dir)
        if checkpoint is None:
            return cfg
        cfg = cfg.copy()
        cfg.ckpt_path = str(checkpoint)
        print(f"SLURM requeued this job (restart {restart_count()}): continuing it")
        resumed = resume_config(cfg)[0]  # the same job: its command line made the stored config
        print(
            f"resuming {resumed.output_dir} from {resumed.ckpt_path} with the config stored in it"
        )
        return resumed
    resumed, checkpoint = resume_config(cfg)
    if overrides is None and not _hydra_running():
        # train(cfg) called directly: the given config's limits are what is asked for.
        changed = []
        for key in RESUME_OVERRIDABLE:
            value = OmegaConf.select(cfg, key)
            if value != OmegaConf.select(resumed, key):
                OmegaConf.update(resumed, key, value, force_add=True)
                changed.append(f"{key}={value}")
    else:
        changed = _apply_resume_overrides(resumed, command_line_overrides(overrides))
    _check_work_left(resumed, checkpoint)
    extra = f" ({', '.join(changed)})" if changed else ""
    stored = f"with the config stored in it{extra}"
    print(f"resuming {resumed.output_dir} from {resumed.ckpt_path} {stored}")
    return resumed


def command_line_overrides(overrides: list[str] | None = None) -> list[str]:
    """The ``key=value`` overrides this run was given: ``overrides``, else Hydra's."""
    if overrides is not None:
        return list(overrides)
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if _hydra_running() else []


def _hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def _apply_resume_overrides(resumed: DictConfig, overrides: list[str]) -> list[str]:
    """Apply the overrides a resumed run may take; refuse, in one line, the ones that would
    change its config. Returns the ones applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    applied, refused = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "ckpt_path" or key.startswith("hydra.") or override.is_delete():
            continue
        value = override.value()
        if key in RESUME_OVERRIDABLE:
            OmegaConf.update(resumed, key, value, force_add=True)
            applied.append(override.input_line)
            continue
        stored = OmegaConf.select(resumed, key, default=None)
        if OmegaConf.is_config(stored):
            stored = OmegaConf.to_container(stored, resolve=True)
        if stored != value or _is_group(key):
            refused.append(override.input_line)
    if refused:
        raise ConfigError(
            f"ckpt_path continues a run with the config stored in its checkpoint; "
            f"{', '.join(refused)} would change it (only {', '.join(RESUME_OVERRIDABLE)} "
            "may): start a new run instead, or model=pretrained model.checkpoint=... to start "
            "from its weights"
        )
    return applied


def _is_group(key: str) -> bool:
    return (CONF_DIR / key).is_dir()


def _check_work_left(resumed: DictConfig, checkpoint: dict[str, Any]) -> None:
    """Refuse to continue a finished run that its limits leave nothing to do in; a run that
    finished fitting but not testing goes on (it tests)."""
    run_dir = run_dir_of(Path(resumed.ckpt_path))
    if run_dir is None or not (run_dir / "metrics.json").is_file():
        return
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    epochs = int(progress.get("current", {}).get("processed", 0))
    steps = int(checkpoint.get("global_step", 0))
    max_epochs = resumed.trainer.get("max_epochs")
    max_steps = resumed.trainer.get("max_steps") or -1
    stopper = next(
        (v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("EarlyStopping")),
        {},
    )
    if stopper.get("stopped_epoch", 0) > 0:
        done = f"early stopping ended it after epoch {epochs}: it would stop again at once"
    elif max_epochs not in (None, -1) and epochs >= max_epochs:
        done = f"it trained all {epochs} epochs of trainer.max_epochs={max_epochs}"
    elif max_steps != -1 and steps >= max_steps:
        done = f"it reached trainer.max_steps={max_steps}"
    else:
        return
    raise ConfigError(
        f"the run in {run_dir} is finished ({done}): to train it on, raise the limit "
        f"(trainer.max_epochs=N, N > {epochs}); to test it again: python eval.py "
        f"ckpt_path={run_dir}"
    )


def relocated(config: DictConfig, old: str, new: str) -> DictConfig:
    """``config`` with every path inside run dir ``old`` moved into ``new``: a run dir that
    was moved or copied continues where it is now, and never writes to where it was."""
    if Path(old) == Path(new):
        return config

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            return new + value[len(old.rstrip("/")) :]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(config, resolve=False)))


def resume_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """The config to continue a run from ``cfg.ckpt_path`` (a checkpoint, a run dir, or
    ``last``: the newest ``last.ckpt`` under ``outputs/``, i.e. the latest run), and the
    checkpoint itself.

    It is the checkpoint's own config, so the run continues exactly as it started, in its own
    output dir and, when it logged to W&B, in the same W&B run.
    """
    path = find_checkpoint(cfg.ckpt_path)
    checkpoint = load_checkpoint(path)
    resumed = run_config(checkpoint, path)
    run_dir = run_dir_of(path.resolve())
    if run_dir is not None and resumed.get("output_dir"):
        resumed = relocated(resumed, str(resumed.output_dir), str(run_dir))
    resumed.ckpt_path = str(path)
    wandb_id = checkpoint.get(WANDB_ID_KEY)
    if wandb_id and OmegaConf.select(resumed, "logger.wandb") is not None:
        OmegaConf.update(resumed, "logger.wandb.id", wandb_id, force_add=True)
        OmegaConf.update(resumed, "logger.wandb.resume", "allow", force_add=True)
    return resumed, checkpoint
