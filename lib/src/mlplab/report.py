"""The run report: learning curves, confusion matrix, misclassified images and report.md.

:class:`RunReport` writes it when testing ends, from the run record (:mod:`mlplab.record`)
and the tested model. Everything is rendered with matplotlib's Agg backend, so no display
is needed. A picture that cannot be written is reported and skipped; the rest still is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from mlplab.data.contract import TaskData
from mlplab.errors import ConfigError
from mlplab.plotting import pyplot, save_figure
from mlplab.record import (
    RunRecord,
    baseline_sentences,
    format_metric,
    training_sentence,
)
from mlplab.rundir import write_text

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The outputs for every row of ``x`` (class logits, or values for regression), on the
    network's device, in eval mode, returned on the CPU."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    outputs = [net(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    net.train(was_training)
    return torch.cat(outputs)


def confusion_matrix(labels: Tensor, preds: Tensor, num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(preds, labels, num_classes).numpy()


def plot_curves(
    history: Sequence[dict[str, float]], tested_epoch: int | None, stopped_early: bool, path: Path
) -> Path:
    """Loss and the headline metric per epoch, train vs val (the lesson's model complexity
    graph). The headline metric is accuracy when measured, else the first other metric
    (R² for ``metrics=regression``).

    The tested epoch (the best checkpoint's) is marked, and so is the epoch where early
    stopping ended training.
    """
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    names = [k.removeprefix("val/") for k in history[-1] if k.startswith("val/")]
    headline = next((n for n in ("acc", "r2", *names) if n in names and n != "loss"), "acc")
    title = {"acc": "accuracy", "r2": "R²"}.get(headline, headline.upper())
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, headline, title)):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}/{metric}", np.nan) for row in history]
            ax.plot(epochs, values, style, markersize=3, label=f"{split} {label}")
        if tested_epoch is not None:
            ax.axvline(
                tested_epoch,
                color="tab:green",
                linestyle="--",
                label=f"tested epoch ({tested_epoch})",
            )
        if stopped_early and epochs:
            ax.axvline(
                epochs[-1], color="tab:red", linestyle=":", label=f"early stop ({epochs[-1]})"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title(
        "Loss (model complexity graph: val rising while train falls = overfitting)", fontsize=9
    )
    ax_acc.set_title(title[0].upper() + title[1:])
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrix of the test set, counts in each cell, rows = true class."""
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.6 + 0.55 * n))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    threshold = matrix.max() / 2
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"Test confusion matrix (accuracy {100 * accuracy:.2f}%)")
    return save_figure(fig, path)


def plot_predicted_vs_true(target: Tensor, pred: Tensor, path: Path) -> Path:
    """Test predictions against the true values, one panel per target, with the diagonal."""
    plt = pyplot()
    target, pred = target.reshape(len(target), -1).numpy(), pred.reshape(len(pred), -1).numpy()
    k = target.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(4.6 * k + 0.4, 4.4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        t, p = target[:, j], pred[:, j]
        ax.scatter(t, p, s=12, alpha=0.6)
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], color="tab:red", linewidth=1, label="perfect")
        r2 = 1 - ((t - p) ** 2).sum() / max(((t - t.mean()) ** 2).sum(), 1e-12)
        ax.set_title(f"Test set: predicted vs true (R² {r2:.3f})", fontsize=10)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_residuals(target: Tensor, pred: Tensor, path: Path) -> Path:
    """Histogram of the test residuals (predicted - true), with their mean and spread."""
    plt = pyplot()
    residuals = (pred.reshape(len(pred), -1) - target.reshape(len(target), -1)).numpy().ravel()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.hist(residuals, bins=min(40, max(10, len(residuals) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="tab:red", linewidth=1)
    ax.set_title(
        f"Test residuals (predicted - true): mean {residuals.mean():.3g}, "
        f"std {residuals.std():.3g}",
        fontsize=10,
    )
    ax.set_xlabel("residual")
    ax.set_ylabel("examples")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def tile_images(images: np.ndarray, cols: int, gap: int, caption: int, fill: float) -> np.ndarray:
    """Lay ``images`` (n, h, w) out in rows of ``cols``, ``gap`` pixels apart, with a
    ``caption``-pixel strip above each one; empty space is ``fill``."""
    n, h, w = images.shape
    rows = max(1, -(-n // cols))
    cell_h, cell_w = caption + h + gap, w + gap
    grid = np.full((rows * cell_h - gap, cols * cell_w - gap), fill, dtype=images.dtype)
    for k, image in enumerate(images):
        top, left = (k // cols) * cell_h + caption, (k % cols) * cell_w
        grid[top : top + h, left : left + w] = image
    return grid


def plot_misclassified(
    images: Tensor,
    labels: Tensor,
    preds: Tensor,
    class_names: Sequence[str],
    path: Path,
    max_images: int = 36,
) -> Path:
    """A grid of the first misclassified test images, captioned 'true -> predicted'.

    The grid is one image with a caption over each tile, not one subplot per image: laying
    out 36 subplots costs about a second, more than the rest of the report. ``images`` are
    ``(N, C, H, W)``; color images are shown by their mean over channels.
    """
    plt = pyplot()
    wrong = torch.nonzero(labels != preds).flatten()[:max_images]
    cols, gap, caption = 6, 4, 10
    h, w = images.shape[-2:]
    picked = images[wrong.to(images.device)].float().reshape(len(wrong), -1, h, w)
    picked = picked.mean(1).cpu().numpy()
    grid = tile_images(picked, cols, gap, caption, fill=float(images.min()))
    rows = (grid.shape[0] + gap) // (caption + h + gap)
    fig, ax = plt.subplots(figsize=(1.6 * cols, 1.8 * rows + 0.4))
    ax.imshow(grid, cmap="gray_r", interpolation="nearest")
    ax.axis("off")
    for k, index in enumerate(wrong.tolist()):
        x = (k % cols) * (w + gap) + (w - 1) / 2
        y = (k // cols) * (caption + h + gap) + caption - 2
        text = f"{class_names[labels[index]]} -> {class_names[preds[index]]}"
        ax.text(x, y, text, ha="center", va="bottom", fontsize=8)
    total = int((labels != preds).sum())
    ax.set_title(f"Misclassified test images: {total} of {len(labels)} (true -> predicted)")
    return save_figure(fig, path)


# Where report.md says its pictures were left for later (a study's trial): replaced by them
# when they are drawn (:func:`draw_pictures`).
DEFERRED = (
    "Pictures: drawn for the study's best trial only (callbacks.report.pictures=all draws "
    "them for every trial)."
)


def write_report(
    output_dir: Path,
    metrics: dict[str, Any],
    config: dict[str, Any],
    sections: Sequence[Sequence[str]],
    pictures: dict[str, Path],
    deferred: bool = False,
) -> Path:
    """report.md: the headline numbers, contributed sections, the epoch log and the pictures
    (``deferred``: a line saying they are drawn later instead)."""
    history = metrics.get("history", [])
    tested = metrics.get("tested_epoch")

    def name(group: str) -> str:  # "torch.optim.SGD" -> "SGD"
        return str(config.get(group, {}).get("_target_", "?")).rsplit(".", 1)[-1]

    scores = ", ".join(
        f"{k.removeprefix('test/')} {format_metric(k, v, '.4f')}"
        for k, v in metrics.items()
        if k.startswith("test/")
    )
    lines = ["# Run report", "", f"- **test: {scores}**"]
    if "stop_reason" in metrics:
        best = (
            f" (best epoch by val loss: {metrics['best_epoch']})" if "best_epoch" in metrics else ""
        )
        lines.append(f"- {training_sentence(metrics)}{best}")
    lines += [f"- {sentence}" for sentence in baseline_sentences(metrics, strong="**")]
    if "val/acc_best" in metrics:
        lines.append(f"- best val accuracy {100 * metrics['val/acc_best']:.2f}%")
    if "num_params" in metrics:
        lines.append(f"- {metrics['num_params']:,} parameters, {metrics['wall_s']:.1f} s")
    if "checkpoint" in metrics:
        lines.append(f"- checkpoint: `{metrics['checkpoint']}`")
    sizes = ", ".join(f"{k} {v:,}" for k, v in metrics.get("split_sizes", {}).items())
    lines.append(f"- data: `{metrics.get('data', name('data'))}` ({sizes})")
    tested_n, test_n = metrics.get("test_examples"), metrics.get("split_sizes", {}).get("test")
    if tested_n is not None and tested_n != test_n:
        lines.append(
            f"- tested on {tested_n:,} of the {test_n:,} test examples (limit_test_batches)"
        )
    if "model" in config:
        lines.append(f"- model: {_model_line(config['model'], config.get('regularization', {}))}")
    if "optimizer" in config:
        reg = config.get("regularization", {})
        lines.append(
            f"- optimizer: `{name('optimizer')}` lr {config['optimizer'].get('lr')}, "
            f"weight decay {reg.get('weight_decay')}, L1 {reg.get('l1')}; loss `{name('loss')}`; "
            f"seed {config.get('seed')}"
        )
    lines.append("")
    for section in sections:
        lines += [*section, ""]
    if history:
        lines += _history_table(history, tested, pictures.get("curves"))
    lines += _test_pictures(pictures) if not deferred else [DEFERRED, ""]
    lines += ["Full config: `.hydra/config.yaml`; all metrics: `metrics.json`.", ""]
    return write_text(output_dir / "report.md", "\n".join(lines))


def _test_pictures(pictures: dict[str, Path]) -> list[str]:
    test_pictures = [p for key, p in pictures.items() if key != "curves"]
    if not test_pictures:
        return []
    return [
        "## Test set",
        "",
        *(f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in test_pictures),
    ]


def _model_line(model: dict[str, Any], reg: dict[str, Any]) -> str:
    if "checkpoint" in model:  # transfer learning: the architecture comes from the checkpoint
        return (
            f"hidden layers of `{model['checkpoint']}`, new output layer; frozen "
            f"hidden layers {list(model.get('freeze', []))}, dropout {reg.get('dropout')}"
        )
    details = ", ".join(
        f"{k} {v}" for k, v in model.items() if k not in ("_target_", "compile") and v is not None
    )
    return f"`{str(model.get('_target_', '?')).rsplit('.', 1)[-1]}` {details}"


def _history_table(
    history: Sequence[dict[str, float]], tested: int | None, curves: Path | None
) -> list[str]:
    keys = [k for k in history[-1] if k.startswith(("train/", "val/"))]
    lines = ["## Learning curves", ""]
    if curves is not None:
        lines += [f"![learning curves]({curves.name})", ""]
    lines += [
        "| epoch | " + " | ".join(keys) + " | lr | s |",
        "|---:|" + "---:|" * (len(keys) + 2),
    ]
    for row in history:
        mark = " **(tested)**" if row["epoch"] == tested else ""
        cells = [format_metric(k, row.get(k, float("nan")), ".4f") for k in keys]
        lines.append(
            f"| {row['epoch']}{mark} | "
            + " | ".join(cells)
            + f" | {row.get('lr', float('nan')):.3g} | {row.get('epoch_s', float('nan')):.2f} |"
        )
    return [*lines, ""]


class RunReport(L.Callback):
    """Write report.md and its pictures when testing ends: learning curves, the test
    confusion matrix, and for images the misclassified ones. ``pl_module`` holds the tested
    weights then, so the pictures show the tested model.

    ``pictures``: ``best`` (the default: every run but the trials of a study, whose pictures,
    0.5-1 s a trial on a 2-core CPU, as long as a short trial's fit, are drawn once, for its
    best trial, when the study's sweep ends), ``all`` or ``none``.
    """

    def __init__(self, pictures: str = "best") -> None:
        if pictures not in ("all", "best", "none"):
            raise ConfigError(
                f"callbacks.report.pictures={pictures}: choose all, best (a study's best "
                "trial only) or none"
            )
        self.pictures = pictures

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = RunRecord.of(trainer)
        if record is None or not trainer.is_global_zero:
            return
        later = self.pictures == "best" and in_ranked_sweep()
        pictures: dict[str, Path] = {}
        if self.pictures != "none" and not later:
            tested = record.tested or _test_split(trainer.datamodule)
            drawers = self._pictures(record.metrics, tested, pl_module, trainer.datamodule)
            pictures = _drawn(drawers, record.output_dir)
        record.files.update(pictures)
        sections = [s(record.metrics) if callable(s) else s for s in record.report_sections]
        path = write_report(
            record.output_dir, record.metrics, record.config, sections, pictures, later
        )
        record.files["report"] = path

    @staticmethod
    def _pictures(
        m: dict[str, Any], tested: Any, pl_module: L.LightningModule, datamodule: Any
    ) -> dict[str, Callable[[Path], Path]]:
        pictures: dict[str, Callable[[Path], Path]] = {}
        if m.get("history"):
            pictures["curves"] = lambda p: plot_curves(
                m["history"], m.get("tested_epoch"), bool(m.get("stopped_early")), p
            )
        if not isinstance(datamodule, TaskData):
            return pictures
        # Exactly the examples the test metrics were computed on (limit_test_batches).
        x, y = tested
        outputs, y = predict(pl_module, x), y.cpu()
        if datamodule.task == "regression":
            pictures["predicted_vs_true"] = lambda p: plot_predicted_vs_true(y, outputs, p)
            pictures["residuals"] = lambda p: plot_residuals(y, outputs, p)
            return pictures
        preds = outputs.argmax(1)
        names = datamodule.class_names or [str(i) for i in range(datamodule.num_outputs)]
        pictures["confusion_matrix"] = lambda p: plot_confusion_matrix(
            confusion_matrix(y, preds, len(names)), names, p
        )
        if len(datamodule.input_shape) == 3 and bool((y != preds).any()):  # images, a miss
            pictures["misclassified"] = lambda p: plot_misclassified(x, y, preds, names, p)
        return pictures


def _test_split(datamodule: Any) -> Any:
    return datamodule.splits["test"] if isinstance(datamodule, TaskData) else None


def _drawn(drawers: dict[str, Callable[[Path], Path]], folder: Path) -> dict[str, Path]:
    """Each picture drawn into ``folder``; one that cannot be written (a full disk) is said
    and skipped, the rest still are."""
    pictures: dict[str, Path] = {}
    for name, draw in drawers.items():
        path = folder / f"{name}.png"
        try:
            pictures[name] = draw(path)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)
    return pictures


def in_ranked_sweep() -> bool:
    """Whether this job is a trial of a sweep that ranks its trials (its sweeper has a
    ``direction``: an Optuna study), so that its best trial is known when it ends."""
    from hydra.core.hydra_config import HydraConfig

    from mlplab.sweep import in_multirun

    return in_multirun() and bool(HydraConfig.get().sweeper.get("direction"))


def draw_pictures(run_dir: Path) -> dict[str, Path]:
    """Draw a finished run's pictures after the fact (a study's best trial) from its tested
    checkpoint and test examples, into its dir, and put them into its report.md."""
    import json

    from mlplab.trained import load_trained

    metrics = json.loads((run_dir / "metrics.json").read_text())
    trained = load_trained(metrics.get("best_checkpoint") or run_dir, in_run_dir="last.ckpt")
    datamodule = trained.test_data(trained.data_config())
    tested = _test_split(datamodule)
    if tested is not None and metrics.get("test_examples"):
        tested = tuple(t[: metrics["test_examples"]] for t in tested)
    drawers = RunReport._pictures(metrics, tested, trained.module, datamodule)
    pictures = _drawn(drawers, run_dir)
    report = run_dir / "report.md"
    if report.exists() and DEFERRED in report.read_text():
        curves = [f"![learning curves]({p.name})\n" for k, p in pictures.items() if k == "curves"]
        lines = [*curves, *_test_pictures(pictures)]
        write_text(report, report.read_text().replace(DEFERRED, "\n".join(lines).strip()))
    return pictures
