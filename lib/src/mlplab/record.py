"""The run record: the facts of a run, gathered by the parts that know them, written once.

:class:`RunRecord` is the first callback of every run. At the end of fitting it records the
epoch history and the early-stopping facts (before ``trainer.test`` reloads the best
checkpoint, and with it the callbacks' states); at the end of testing it adds the test
metrics and writes ``metrics.json`` at once; when the run is over it prints the summary.
Other callbacks put their results into it with :meth:`RunRecord.add`: a key of
``metrics.json``, a section of ``report.md``, lines of the printed summary, W&B summary
values. The report (:class:`mlplab.report.RunReport`) and the W&B summary
(:class:`mlplab.tracking.WandbSummary`) read it. A new feature is one more callback.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig
from torch import Tensor

from mlplab.about import describe
from mlplab.callbacks import EpochHistory
from mlplab.checkpoints import tested_checkpoint
from mlplab.data.contract import TaskData, baseline_score
from mlplab.rundir import write_json
from mlplab.secrets import redact_secrets

# A report section: its markdown lines, or a function of the run's final metrics giving them.
Section = Iterable[str] | Callable[[dict[str, Any]], list[str]]


def finite_number(value: Any) -> bool:
    """Whether a record's value is a figure: a finite int or float (a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RunRecord(L.Callback):
    """Collects a run's metrics and outputs; writes ``metrics.json``; prints the summary.

    Args:
        output_dir: the run dir.
        config: the run's config; what is written or logged of it has its secrets redacted.
        flow: the training flow that runs it (a transfer run's comparison calls it again).
    """

    def __init__(
        self,
        output_dir: str | Path,
        config: DictConfig,
        flow: Callable[[DictConfig], dict[str, Any]] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_config = config  # as given: a from-scratch comparison reruns it ...
        self.flow = flow  # ... with the flow that trained this run
        self.config = redact_secrets(config)  # for loggers and reports
        self.metrics: dict[str, Any] = {}  # metrics.json, and what train() returns
        # markdown blocks for report.md: lines, or a function of the final metrics
        self.report_sections: list[list[str] | Callable[[dict[str, Any]], list[str]]] = []
        self.console: list[str] = []  # lines printed before the headline
        self.wandb_summary: dict[str, Any] = {}
        self.files: dict[str, Path] = {}  # what the run wrote, by name
        self.tested: tuple[Tensor, Tensor] | None = None  # the test examples measured
        self._clock = 0.0
        self._wall = 0.0

    @staticmethod
    def of(trainer: L.Trainer) -> RunRecord | None:
        """The record among ``trainer``'s callbacks, if any."""
        return next((c for c in trainer.callbacks if isinstance(c, RunRecord)), None)

    def add(
        self,
        key: str,
        value: Any,
        *,
        report: Section = (),
        console: Iterable[str] = (),
        wandb: dict[str, Any] | None = None,
    ) -> None:
        """Record ``value`` as ``metrics[key]``, with optional report lines (or a function of
        the final metrics that makes them), printed lines and W&B summary values. Call it
        before testing ends: ``metrics.json`` is written then."""
        self.metrics[key] = value
        if report:
            self.report_sections.append(report if callable(report) else list(report))
        self.console += list(console)
        self.wandb_summary.update(wandb or {})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, TaskData):  # loaded by now: Lightning sets it up first
            self.metrics["data"] = datamodule.name
            self.metrics["split_sizes"] = {s: len(y) for s, (_, y) in datamodule.splits.items()}

    # -- fit ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = time.perf_counter()
        profiler = trainer.profiler
        if getattr(profiler, "dirpath", None) and getattr(profiler, "filename", None):
            for stage in ("fit", "test"):  # written when each stage ends (Lightning's names)
                name = f"{stage}-{profiler.filename}.txt"
                self.files[f"{stage}_profile"] = Path(profiler.dirpath) / name
        metric, baseline = _baseline(trainer)
        for logger in trainer.loggers:
            logger.log_hyperparams(self.config)
            if baseline:
                logger.log_metrics({f"baseline/{s}_{metric}": v for s, v in baseline.items()}, 0)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_s = time.perf_counter() - self._clock
        self._wall += fit_s
        history = next(
            (list(c.epochs) for c in trainer.callbacks if isinstance(c, EpochHistory)), []
        )
        reason = why_fit_ended(trainer)
        epochs = trainer.fit_loop.epoch_progress.current.processed  # partial ones included
        best = tested_checkpoint(trainer) or ""
        better = metric_directions(pl_module)
        self.metrics.update(
            {
                **_best_of(history, better),
                "better": better,  # each metric's better direction: what <metric>_best took
                "epochs_trained": epochs,
                "steps": trainer.global_step,
                "stop_reason": reason,
                "stopped_early": reason == "early_stopping",
                # The last epoch trained when early stopping ended training (1 = the first).
                "stopped_epoch": epochs if reason == "early_stopping" else None,
                "best_checkpoint": best,
                # The epoch whose weights are tested: the best checkpoint's, else the last.
                "tested_epoch": _checkpoint_epoch(best) if best else epochs or None,
                "tested_weights": "best checkpoint" if best else "last",
                "num_params": sum(p.numel() for p in pl_module.parameters()),
                "trainable_params": sum(
                    p.numel() for p in pl_module.parameters() if p.requires_grad
                ),
                "torch_threads": torch.get_num_threads(),
                "mlplab": describe(),  # the library that ran it, and where it came from
                "world_size": trainer.world_size,
                "fit_s": round(fit_s, 2),  # of wall_s: the rest is testing
                "history": history,
            }
        )

    # -- test -----------------------------------------------------------------------------
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wall += time.perf_counter() - self._clock
        test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        self.tested = measured = measured_examples(trainer)  # the report draws these too
        if measured is not None:
            self.metrics["test_examples"] = len(measured[1])
        metric, baseline = _baseline(trainer, measured)
        if "test" in baseline and f"test/{metric}" in test:
            margin, scale = MARGINS[metric]
            test[f"baseline/test_{metric}"] = baseline["test"]
            test[margin] = scale * (test[f"test/{metric}"] - baseline["test"])
        self.metrics = {**test, **self.metrics, "wall_s": round(self._wall, 2)}
        if trainer.is_global_zero:  # every DDP rank holds the same metrics; one writes them
            self.files["metrics"] = write_json(self.output_dir / "metrics.json", self.metrics)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test" and trainer.is_global_zero and self.metrics:
            print(self.summary())

    def summary(self) -> str:
        """The last lines of a run: contributed lines, the test result, the run dir."""
        m = self.metrics
        lines = list(self.console)
        test = {k.removeprefix("test/"): v for k, v in m.items() if k.startswith("test/")}
        if "acc" in test:
            headline = f"test accuracy {100 * test.pop('acc'):.2f}%"
        elif "r2" in test:
            headline = f"test R² {test.pop('r2'):.4f}"
        else:
            headline = "test"
        headline += f" (loss {test.pop('loss', math.nan):.4f})"
        others = ", ".join(f"{k} {format_metric(k, v)}" for k, v in test.items())
        lines.append(headline + (f", {others}" if others else "") + _epochs_line(m))
        lines += baseline_sentences(m)
        files = ", ".join(p.name for p in self.files.values())
        lines.append(f"run dir: {self.output_dir}" + (f" ({files})" if files else ""))
        return "\n".join(lines)


# The task's baseline metric -> (the margin's key in the metrics, its scale).
MARGINS = {"acc": ("margin_points", 100), "r2": ("margin_r2", 1)}


def format_metric(key: str, value: float, number: str = ".4g") -> str:
    """A metric as a person reads it: accuracy and error rate in percent, the rest as
    numbers (``key`` may carry its split, as in ``val/acc``)."""
    if key.rsplit("/", 1)[-1] in ("acc", "error"):
        return f"{100 * value:.2f}%"
    return format(value, number)


def baseline_sentences(m: dict[str, Any], strong: str = "") -> list[str]:
    """What the model beats: the majority class or the training mean (``strong`` wraps the
    margin, e.g. ``**`` in markdown)."""
    lines = []
    if "margin_points" in m:
        lines.append(
            f"majority-class baseline {100 * m['baseline/test_acc']:.2f}%: the model "
            + _margin(m["margin_points"], f"{abs(m['margin_points']):.2f} points", strong)
        )
    if "margin_r2" in m:
        lines.append(
            f"predicting the training mean: R² {m['baseline/test_r2']:.4f}; the model "
            + _margin(m["margin_r2"], f"{abs(m['margin_r2']):.4f}", strong)
        )
    return lines


def _margin(margin: float, amount: str, strong: str) -> str:
    """``beats it by X``, or for a model no better than the baseline ``falls short of it by X``."""
    if margin == 0:
        return f"ties it ({strong}{amount}{strong})"
    verb = "beats it by" if margin > 0 else "falls short of it by"
    return f"{verb} {strong}{amount}{strong}"


def _epochs_line(m: dict[str, Any]) -> str:
    if "stop_reason" not in m:
        return ""
    return f"\n{training_sentence(m)}"


# Why Trainer.fit returned (metrics.json's stop_reason), in the order Lightning's fit loop
# checks its limits; the sentence the summary and the report say for each.
STOP_REASONS = {
    "interrupted": "training was interrupted (Ctrl-C or SIGTERM) in epoch {epochs}",
    "fast_dev_run": "trainer.fast_dev_run: {steps} training step(s), a check that the code "
    "runs, not a result",
    "no_training_batches": "no training batch ran (limit_train_batches=0): nothing was trained",
    "max_steps": "training stopped at trainer.max_steps={steps}, in epoch {epochs}",
    "max_epochs": "trained {n_epochs}, all that trainer.max_epochs allows",
    "early_stopping": "early stopping ended training after epoch {epochs}",
    "max_time": "trainer.max_time ended training in epoch {epochs} (step {steps})",
    "pruned": "the study's pruner stopped this trial in epoch {epochs}",
    "should_stop": "trainer.should_stop (set by a callback or the module) ended training "
    "in epoch {epochs}",
}


def why_fit_ended(trainer: L.Trainer) -> str:
    """Why ``fit`` returned (a key of :data:`STOP_REASONS`), read from Lightning's state in
    the order its fit loop checks it (``_FitLoop.done``): a run that reached max_epochs as
    early stopping fired ended by max_epochs, one that early stopping asked to stop before
    ``min_epochs`` ended when it could."""
    loop = trainer.fit_loop
    if trainer.interrupted:
        return "interrupted"
    if trainer.fast_dev_run:
        return "fast_dev_run"
    if trainer.global_step == 0 and not loop.epoch_progress.current.processed:
        return "no_training_batches"
    if loop.max_steps != -1 and trainer.global_step >= loop.max_steps:
        return "max_steps"
    if loop.max_epochs not in (None, -1) and loop.epoch_progress.current.processed >= (
        loop.max_epochs
    ):
        return "max_epochs"
    if any(getattr(c, "pruned_epoch", None) for c in trainer.callbacks):
        return "pruned"  # mlplab.pruning.TrialReporting: the study's pruner
    stopper = trainer.early_stopping_callback
    if (
        stopper is not None
        and trainer.should_stop
        and (stopper.stopped_epoch > 0 or stopper.wait_count >= stopper.patience)
    ):
        return "early_stopping"
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and (timer.time_remaining() or 0) <= 0:
        return "max_time"
    return "should_stop"


def training_sentence(m: dict[str, Any]) -> str:
    """What was trained and tested, and why training ended, from metrics.json's facts."""
    epochs = m.get("epochs_trained")
    n_epochs = f"{epochs} epoch{'s' * (epochs != 1)}"
    facts = {"epochs": epochs, "n_epochs": n_epochs, "steps": m.get("steps")}
    stop = STOP_REASONS.get(m["stop_reason"], m["stop_reason"]).format(**facts)
    tested = (
        f"tested the weights of epoch {m.get('tested_epoch')}"
        if m.get("tested_weights") != "last"
        else f"tested the last weights (epoch {m.get('tested_epoch')}, no checkpoint kept)"
    )
    return f"{tested}; {stop}"


def metric_directions(pl_module: L.LightningModule) -> dict[str, str]:
    """``higher`` or ``lower`` for each metric the module logs whose better direction is
    known: its losses (``<stage>/loss``, lower) and the torchmetrics it holds in
    ``MetricCollection``s (by their logged, prefixed names; torchmetrics' own
    ``higher_is_better``). A metric that does not say is left out: not guessed."""
    from torchmetrics import MetricCollection

    better = {"train/loss": "lower", "val/loss": "lower", "test/loss": "lower"}
    for collection in pl_module.modules():
        if isinstance(collection, MetricCollection):
            for name, metric in collection.items(keep_base=False, copy_state=False):
                if isinstance(metric.higher_is_better, bool):
                    better[name] = "higher" if metric.higher_is_better else "lower"
    return dict(sorted(better.items()))


def _best_of(history: list[dict[str, float]], better: dict[str, str]) -> dict[str, Any]:
    """The best epoch by validation loss, and each validation metric's best value in its
    better direction (``val/<metric>_best``), for those measured every epoch."""
    scored = [e for e in history if "val/loss" in e]
    if not scored:
        return {}
    best = min(scored, key=lambda e: e["val/loss"])
    found: dict[str, Any] = {"val/loss_best": best["val/loss"], "best_epoch": int(best["epoch"])}
    for name, direction in better.items():
        if name.startswith("val/") and name != "val/loss" and all(name in e for e in scored):
            values = [e[name] for e in scored]
            found[f"{name}_best"] = max(values) if direction == "higher" else min(values)
    return found


def _checkpoint_epoch(path: str) -> int | None:
    """The epoch (1 = the first) a Lightning checkpoint was saved after."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: the test step will say so
        return None
    return int(state["epoch"]) + 1


def _baseline(
    trainer: L.Trainer, measured: tuple[Tensor, Tensor] | None = None
) -> tuple[str, dict[str, float]]:
    """The data's baseline metric (accuracy for classification, R² for regression) and its
    score per split, the test split's on the ``measured`` examples when given; none without
    the data contract."""
    datamodule = trainer.datamodule
    if not isinstance(datamodule, TaskData):
        return "acc", {}
    metric = "acc" if datamodule.task == "classification" else "r2"
    scores = datamodule.baseline()
    if measured is not None and "train" in datamodule.splits:
        train = datamodule.splits["train"][1]
        scores["test"] = baseline_score(datamodule.task, train.cpu(), measured[1].cpu())
    return metric, scores


def measured_examples(trainer: L.Trainer) -> tuple[Tensor, Tensor] | None:
    """The ``(inputs, targets)`` of the batches the test loop just measured in this process:
    all of the test split, or what ``limit_test_batches`` left of it (on the CPU)."""
    loaders = trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    if loader is None:
        return None
    batches = trainer.test_loop.batch_progress.current.completed
    taken = list(itertools.islice(iter(loader), batches))
    if not taken or not all(isinstance(b, list | tuple) and len(b) == 2 for b in taken):
        return None
    return torch.cat([b[0].cpu() for b in taken]), torch.cat([b[1].cpu() for b in taken])
