"""``train(cfg) -> metrics``: the whole run as one pure function of the config.

How a run flows: the data module is loaded (it knows its shapes), the LightningModule is
built for it, the callbacks and loggers come from the config, and the Trainer fits, then
tests the best checkpoint. Everything the run leaves behind is written by components that
own it: :class:`~mlplab.record.RunRecord` (metrics.json, the printed summary),
:class:`~mlplab.report.RunReport` (report.md and pictures), the training doctor, the W&B
summary, checkpoints. See the README's "How a run flows".
"""

from __future__ import annotations

import os
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
from mlplab.record import RunRecord
from mlplab.resume import continued_config, continues_in
from mlplab.rundir import writing_run_dir
from mlplab.speedups import skip_unused_batch_hooks
from mlplab.sweep import ddp_job
from mlplab.tasks import with_task_defaults
from mlplab.tracking import finishing, wandb_run_id


def train(cfg: DictConfig) -> dict[str, Any]:
    """Seed, build, fit, test the best checkpoint; return the metrics (also in metrics.json).

    With ``ckpt_path`` set, the run that wrote that checkpoint continues instead, with the
    config stored in it, in its own output dir (and W&B run); so does a requeued SLURM job.
    """
    cfg = continued_config(cfg)  # ckpt_path=..., or a requeued SLURM job's own checkpoint
    validate_config(cfg)  # again here: tests and sweepers call train() directly
    check_trainer(cfg.trainer)
    output_dir = Path(cfg.output_dir)
    with writing_run_dir(output_dir, continuing=continues_in(cfg)):  # one writer per run dir
        return _train(cfg, output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    configure_threads(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # loaded now: the network's shape comes from the data
    cfg = with_task_defaults(cfg, datamodule.task)  # regression data: regressor, mse, ...
    module = instantiate(
        cfg.module,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        task=datamodule.task,
    )
    loggers = instantiate_each(cfg.get("logger"))
    record = RunRecord(output_dir, cfg)  # first: later callbacks add to it
    run_state = RunStateInCheckpoint(
        record.config, output_dir / "checkpoints", wandb_run_id(loggers), mlflow_run_id(loggers)
    )
    callbacks = [record, EpochHistory(), run_state, *instantiate_each(cfg.callbacks)]
    trainer = make_trainer(cfg.trainer, callbacks, loggers, output_dir)

    # Loggers finish first: a requeued SLURM job is killed as soon as it is requeued. In a
    # sweep, a job's DDP ranks run that job only (mlplab.sweep.ddp_job).
    with run_state.resume_hint(), finishing(loggers), ddp_job(output_dir):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        trainer.test(
            module, datamodule=datamodule, ckpt_path=tested_checkpoint(trainer), verbose=False
        )
    return record.metrics


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
