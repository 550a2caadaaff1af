"""``train(cfg) -> metrics``: the whole run as one pure function of the config."""

from __future__ import annotations

import json
import logging
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from mlplab.callbacks import EpochHistory
from mlplab.checkpoints import RunStateInCheckpoint, resume_config
from mlplab.config import validate_config
from mlplab.data import TensorDataModule
from mlplab.doctor import TrainingDoctor, format_finding
from mlplab.errors import RunInterrupted
from mlplab.instantiate import instantiate_each, instantiate_optional
from mlplab.module import Classifier
from mlplab.report import build_report
from mlplab.tracking import finish_wandb, log_run_to_wandb, wandb_run_id
from mlplab.transfer import pretrained_architecture

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[TensorDataModule, Classifier]:
    """Instantiate the data module (loaded, so that it knows its sizes) and the model for it."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The network's input and output sizes come from the data, never from constants.
    net = instantiate(
        cfg.model, in_features=datamodule.num_features, num_classes=datamodule.num_classes
    )
    model = Classifier(
        net,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate_optional(cfg.scheduler),
        l1=cfg.regularization.l1,
    )
    return datamodule, model


def train(cfg: DictConfig) -> dict[str, Any]:
    """Seed, build, fit, test the best checkpoint; write ``metrics.json``; return the metrics.

    With ``ckpt_path`` set, the run that wrote that checkpoint continues instead, with the
    config stored in it, in its own output dir (and W&B run).
    """
    if cfg.get("ckpt_path"):
        cfg = resume_config(cfg)
        print(f"resuming {cfg.output_dir} from {cfg.ckpt_path} with the config stored in it")
    validate_config(cfg)  # again here: tests and sweepers call train() directly
    configure_threads(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Secrets (API keys, tokens) never reach logs, checkpoints or reports.
    resolved = redact_secrets(OmegaConf.to_container(cfg, resolve=True))

    # Transfer learning's yardstick: the same architecture and budget, trained from scratch.
    scratch = train(from_scratch_config(cfg)) if cfg.get("compare_from_scratch") else None

    datamodule, model = build(cfg)
    baseline = datamodule.baseline_accuracy()
    history = EpochHistory()
    loggers = instantiate_each(cfg.get("logger"))
    run_state = RunStateInCheckpoint(resolved, output_dir / "checkpoints", wandb_run_id(loggers))
    callbacks = [*instantiate_each(cfg.callbacks), history, run_state]
    if not cfg.trainer.get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false means "no bar": drop the configured one rather
        # than let Lightning refuse the combination.
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=output_dir
    )
    for logger in loggers:
        logger.log_hyperparams(resolved)
        logger.log_metrics(
            {f"baseline/{split}_acc": acc for split, acc in baseline.items()}, step=0
        )

    started = time.perf_counter()
    failed = True
    try:
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except (KeyboardInterrupt, SystemExit) as exc:  # Lightning: Ctrl-C -> exit(1), SIGTERM
            if run_state.interrupted_checkpoint is None:
                raise
            raise _interrupted(
                exc, trainer.current_epoch, run_state.interrupted_checkpoint
            ) from None
        # Copied now: testing a checkpoint restores callback states, history included.
        epochs = list(history.epochs)
        doctor = next((c for c in callbacks if isinstance(c, TrainingDoctor)), None)
        findings = [f.to_dict() for f in doctor.findings] if doctor is not None else None
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        (test,) = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        early_stopping = trainer.early_stopping_callback
        metrics = {
            **_test_metrics(test, baseline),
            **_fit_metrics(epochs),
            "stopped_early": bool(early_stopping is not None and early_stopping.stopped_epoch > 0),
            "num_params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "split_sizes": datamodule.split_sizes(),
            "torch_threads": torch.get_num_threads(),
            "world_size": trainer.world_size,
            "wall_s": round(time.perf_counter() - started, 2),
            "best_checkpoint": best,
            "history": epochs,
        }
        if findings is not None:
            metrics["doctor"] = findings
        if scratch is not None:
            metrics["from_scratch"] = {k: scratch[k] for k in SCRATCH_KEYS if k in scratch}
        if trainer.is_global_zero:  # one report per run, also under DDP
            # `model` holds the best checkpoint's weights now: the report shows the tested model.
            report = build_report(
                output_dir,
                model.net,
                datamodule.splits["test"],
                datamodule.class_names,
                datamodule.image_shape,
                metrics,
                resolved,
            )
            log_run_to_wandb(loggers, metrics, report)
        failed = False
    finally:
        finish_wandb(loggers, failed)

    if trainer.is_global_zero:  # every DDP rank holds the same metrics; one writes them
        write_metrics(metrics, output_dir)
        print_summary(metrics, output_dir)
    return metrics


SCRATCH_KEYS = (
    "test/acc",
    "test/loss",
    "val/acc_best",
    "best_epoch",
    "epochs_trained",
    "trainable_params",
    "wall_s",
)


def from_scratch_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the pretrained network replaced by a fresh one of the same architecture.

    Same data, budget, optimizer and seed; its own output dir (``from_scratch/``) and only
    the CSV logger, so the comparison does not add a second W&B run.
    """
    scratch = cfg.copy()
    with open_dict(scratch):
        scratch.model = {
            "_target_": "mlplab.model.MLP",
            **pretrained_architecture(cfg.model.checkpoint),
            "dropout": cfg.model.dropout,
            "compile": cfg.model.get("compile", False),
        }
        scratch.compare_from_scratch = False
        scratch.output_dir = str(Path(cfg.output_dir) / "from_scratch")
        scratch.ckpt_path = None
        scratch.logger = {k: v for k, v in (cfg.get("logger") or {}).items() if k == "csv"}
        if not scratch.logger and "lr_monitor" in scratch.callbacks:
            scratch.callbacks.lr_monitor = None
    return scratch


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


def _interrupted(exc: BaseException, epoch: int, checkpoint: Path) -> RunInterrupted:
    signal_name, code = ("SIGTERM", 143) if isinstance(exc, SIGTERMException) else ("Ctrl-C", 130)
    return RunInterrupted(
        f"training interrupted by {signal_name} in epoch {epoch + 1}; checkpoint saved, "
        f"resume with: python train.py ckpt_path={checkpoint}",
        exit_code=code,
    )


SECRET_WORDS = ("key", "token", "secret", "password", "credential")


def redact_secrets(value: Any) -> Any:
    """A copy of a config container with the values of secret-looking keys replaced by '***'."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) and v else redact_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def _test_metrics(test: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    return {
        "test/acc": float(test["test/acc"]),
        "test/loss": float(test["test/loss"]),
        "baseline/test_acc": baseline["test"],
        "margin_points": 100 * (float(test["test/acc"]) - baseline["test"]),
    }


def _fit_metrics(epochs: list[dict[str, float]]) -> dict[str, Any]:
    scored = [e for e in epochs if "val/loss" in e]
    if not scored:
        return {"epochs_trained": len(epochs)}
    best = min(scored, key=lambda e: e["val/loss"])
    return {
        "val/acc_best": max(e["val/acc"] for e in scored),
        "val/loss_best": best["val/loss"],
        "best_epoch": int(best["epoch"]),  # the epoch whose checkpoint was tested
        "epochs_trained": len(epochs),
    }


def write_metrics(metrics: dict[str, Any], output_dir: Path) -> Path:
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def print_summary(metrics: dict[str, Any], output_dir: Path) -> None:
    """The last lines of a run: test accuracy and its margin over the majority-class baseline."""
    findings = metrics.get("doctor")
    if findings is not None:
        print(f"training doctor: {len(findings) or 'no'} finding{'s' * (len(findings) != 1)}")
        for finding in findings:
            print(textwrap.indent(format_finding(finding), "  "))
    epochs = ""
    if "best_epoch" in metrics:
        epochs = f", best epoch {metrics['best_epoch']} of {metrics['epochs_trained']}"
    print(
        f"test accuracy {100 * metrics['test/acc']:.2f}% "
        f"(loss {metrics['test/loss']:.4f}){epochs}\n"
        f"majority-class baseline {100 * metrics['baseline/test_acc']:.2f}%: "
        f"the model beats it by {metrics['margin_points']:.2f} points\n"
        f"run dir: {output_dir} (report.md, curves.png, confusion_matrix.png, misclassified.png)"
    )
