"""The machinery around a project's training flow: :class:`TrainingRun`.

A project's ``train(cfg)`` reads like Lightning's examples: it builds the data module and the
LightningModule, asks its run for the Trainer, fits, and tests the best checkpoint. Around it,
the run continues a checkpoint's run (``ckpt_path``), checks the config, makes this process the
one writer of the run dir, shares the cores and seeds; its Trainer carries mlplab's callbacks
and loggers. Everything the run leaves behind is written by components that own it:
:class:`~mlplab.record.RunRecord` (metrics.json, the printed summary),
:class:`~mlplab.report.RunReport` (report.md and pictures), the training doctor, the W&B
summary, checkpoints. See the README's "How a run flows".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import (
    Checkpoint,
    DeviceStatsMonitor,
    LearningRateMonitor,
    ProgressBar,
)
from omegaconf import DictConfig, OmegaConf

from mlplab.callbacks import EpochHistory
from mlplab.checkpoints import RunStateInCheckpoint, tested_checkpoint
from mlplab.config import check_trainer, validate_config
from mlplab.errors import ConfigError
from mlplab.instantiate import instantiate_each
from mlplab.mlflow_runs import mlflow_run_id
from mlplab.pruning import trial_callbacks
from mlplab.record import RunRecord
from mlplab.resume import continued_config, continues_in
from mlplab.rundir import writing_run_dir
from mlplab.speedups import skip_unused_batch_hooks
from mlplab.sweep import ddp_job
from mlplab.tasks import with_task_defaults
from mlplab.tracking import finishing, wandb_run_id

Flow = Callable[[DictConfig], dict[str, Any]]


class TrainingRun:
    """What a training flow needs from mlplab, as a ``with`` block around the flow.

    On creation: with ``ckpt_path`` set (or in a requeued SLURM job), the config becomes the
    one stored in that run's checkpoint, to continue it in its own run dir (and W&B run);
    the config is checked. On entering: this process becomes the one writer of the run dir,
    the cores are shared among parallel jobs, and everything is seeded.

    Args:
        cfg: the composed config (``train.yaml``).
        flow: the flow this run runs, called again by a transfer run's comparison with the
            same network trained from scratch (:class:`mlplab.transfer.CompareFromScratch`).
    """

    def __init__(self, cfg: DictConfig, flow: Flow) -> None:
        self.cfg = continued_config(cfg)  # ckpt_path=..., or a requeued SLURM job's own
        validate_config(self.cfg)  # again here: tests and sweepers call the flow directly
        check_trainer(self.cfg.trainer)
        self.output_dir = Path(self.cfg.output_dir)
        self.flow = flow
        self.record: RunRecord | None = None
        self._open = ExitStack()

    def __enter__(self) -> TrainingRun:
        continuing = continues_in(self.cfg)
        self._open.enter_context(writing_run_dir(self.output_dir, continuing=continuing))
        configure_threads(self.cfg)
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        return bool(self._open.__exit__(*exc_info))

    def for_task(self, task: str) -> DictConfig:
        """The config for the data's ``task``: a regression table gets the regressor, MSE and
        regression metrics in each of those groups the run did not choose itself. The choice
        is written into the run dir's ``.hydra/config.yaml``, so that it, the checkpoint and
        the report show the config that ran (:mod:`mlplab.tasks`)."""
        self.cfg = with_task_defaults(self.cfg, task)
        return self.cfg

    def trainer(self) -> L.Trainer:
        """The configured Trainer with mlplab's callbacks (the record first: later callbacks
        add to it) and the configured loggers; they finish when the run's block ends."""
        cfg = self.cfg
        loggers = instantiate_each(cfg.get("logger"))
        self.record = RunRecord(self.output_dir, cfg, flow=self.flow)
        run_state = RunStateInCheckpoint(
            self.record.config,
            self.output_dir / "checkpoints",
            wandb_run_id(loggers),
            mlflow_run_id(loggers),
            resumes=cfg.get("ckpt_path"),
        )
        callbacks = [self.record, EpochHistory(), run_state, *instantiate_each(cfg.callbacks)]
        callbacks += trial_callbacks(cfg.get("optimized_metric"))  # a job of an Optuna study
        trainer = make_trainer(cfg.trainer, callbacks, loggers, self.output_dir)
        # Loggers finish first: a requeued SLURM job is killed as soon as it is requeued. In
        # a sweep, a job's DDP ranks run that job only (mlplab.sweep.ddp_job).
        self._open.enter_context(run_state.resume_hint())
        self._open.enter_context(finishing(loggers))
        self._open.enter_context(ddp_job(self.output_dir))
        return trainer

    @staticmethod
    def tested_checkpoint(trainer: L.Trainer) -> str | None:
        """What ``trainer.test`` loads: the best checkpoint, or (when fitting saved none,
        ``trainer.enable_checkpointing=false``) the weights as they are."""
        return tested_checkpoint(trainer)

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's figures, as in its ``metrics.json``."""
        return self.record.metrics if self.record is not None else {}


def make_trainer(
    trainer_cfg: DictConfig, callbacks: list[L.Callback], loggers: list, output_dir: Path
) -> L.Trainer:
    """The configured Trainer, with mlplab's callbacks and loggers.

    Every argument means what Lightning documents. Where mlplab supplies the part an argument
    switches, it follows the argument: ``enable_progress_bar=false`` drops the configured bar,
    ``enable_checkpointing=false`` the checkpoint callbacks (the last weights are tested),
    and a ``profiler`` writes its report into the run dir.
    """
    drop = (ProgressBar,) * (trainer_cfg.get("enable_progress_bar") is False)
    drop += (Checkpoint,) * (trainer_cfg.get("enable_checkpointing") is False)
    if not loggers:  # logger=none: the callbacks that only feed a logger go, said once
        unfed = [c for c in callbacks if isinstance(c, NEEDS_LOGGER)]
        for callback in unfed:
            print(f"{type(callback).__name__} dropped: it writes to a logger; this run has none")
        drop += tuple(type(c) for c in unfed)
    callbacks = [c for c in callbacks if not isinstance(c, drop)]
    trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        profiler=make_profiler(trainer_cfg.get("profiler"), output_dir),
        default_root_dir=output_dir,
    )
    skip_unused_batch_hooks(trainer.callbacks)  # ~4% of an epoch: see mlplab.speedups
    return trainer


# Callbacks whose only output goes to a logger (Lightning refuses them without one).
NEEDS_LOGGER = (LearningRateMonitor, DeviceStatsMonitor)

PROFILE_NAME = "profile"  # <stage>-profile.txt in the run dir


def make_profiler(spec: Any, output_dir: Path) -> Any:
    """``trainer.profiler`` (a name Lightning knows, or a config with a ``_target_``) writing
    its report to ``<stage>-profile.txt`` in the run dir instead of the log."""
    if spec is None:
        return None
    from lightning.pytorch.profilers import AdvancedProfiler, PyTorchProfiler, SimpleProfiler

    names = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}
    if isinstance(spec, str):
        if spec not in names:
            raise ConfigError(
                f"trainer.profiler={spec} is not a profiler: use one of {', '.join(names)}, "
                "or a config with a _target_"
            )
        return names[spec](dirpath=output_dir, filename=PROFILE_NAME)
    spec = OmegaConf.to_container(spec, resolve=True)
    spec.setdefault("dirpath", str(output_dir))
    spec.setdefault("filename", PROFILE_NAME)
    return instantiate(spec)


def configure_threads(cfg: DictConfig) -> None:
    """Share the cores among parallel sweep jobs and DDP processes so none oversubscribes.

    ``torch_threads`` wins when set; otherwise torch's default (all cores) is divided by the
    number of joblib jobs running at once and by the CPU processes of a DDP run.
    """
    threads = cfg.get("torch_threads")
    if threads is None:
        devices = cfg.trainer.get("devices", 1)
        processes = (
            devices if cfg.trainer.get("accelerator") == "cpu" and isinstance(devices, int) else 1
        )
        share = parallel_jobs() * max(processes, 1)
        if share <= 1:
            return
        threads = max(1, (os.cpu_count() or 1) // share)
    torch.set_num_threads(int(threads))


def parallel_jobs() -> int:
    """How many jobs of this multirun run at once on this machine (joblib launcher), else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return 1
    n_jobs = launcher.get("n_jobs", -1)
    return os.cpu_count() or 1 if n_jobs in (None, -1) else int(n_jobs)
