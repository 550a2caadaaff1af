"""The run report: learning curves, confusion matrix, misclassified digits and report.md.

Everything is rendered with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mlplab.plotting import pyplot, save_figure

REPORT_FILES = {
    "curves": "curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "misclassified": "misclassified.png",
}


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted class of every row of ``x``, on the network's device, in eval mode."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    preds = [
        net(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)
    ]
    net.train(was_training)
    return torch.cat(preds)


def confusion_matrix(labels: Tensor, preds: Tensor, num_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(preds, labels, num_classes).numpy()


def plot_curves(
    history: Sequence[dict[str, float]], best_epoch: int | None, stopped_early: bool, path: Path
) -> Path:
    """Loss and accuracy per epoch, train vs val (the lesson's model complexity graph).

    The best epoch (lowest val loss, the checkpoint that was tested) is marked, and so is the
    epoch where early stopping ended training.
    """
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}/{metric}", np.nan) for row in history]
            ax.plot(epochs, values, style, markersize=3, label=f"{split} {label}")
        if best_epoch is not None:
            ax.axvline(
                best_epoch, color="tab:green", linestyle="--", label=f"best epoch ({best_epoch})"
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
    ax_acc.set_title("Accuracy")
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
    image_shape: Sequence[int],
    path: Path,
    max_images: int = 36,
) -> Path:
    """A grid of the first misclassified test images, captioned 'true -> predicted'.

    The grid is one image with a caption over each tile, not one subplot per image: laying
    out 36 subplots costs about a second, more than the rest of the report.
    """
    plt = pyplot()
    wrong = torch.nonzero(labels != preds).flatten()[:max_images]
    cols, gap, caption = 6, 4, 10
    h, w = image_shape[-2:]
    picked = images[wrong].reshape(len(wrong), h, w).float().cpu().numpy()
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


def doctor_section(findings: Sequence[dict[str, Any]] | None) -> list[str]:
    """The report's lines for the training doctor's findings (none when it did not run)."""
    if findings is None:
        return []
    lines = ["## Training doctor", ""]
    if not findings:
        return [*lines, "No problem found.", ""]
    for f in findings:
        where = f" (epoch {f['epoch']})" if f.get("epoch") is not None else ""
        lines += [
            f"- **{f['check']}**{where}: {f['message']}",
            f"  - likely causes: {f['causes']}",
            f"  - try: {f['fixes']}",
        ]
    return [*lines, ""]


def _model_line(model: dict[str, Any], reg: dict[str, Any]) -> str:
    if "checkpoint" in model:  # transfer learning: the architecture comes from the checkpoint
        return (
            f"- model: hidden layers of `{model['checkpoint']}`, new output layer; frozen "
            f"hidden layers {list(model.get('freeze', []))}, dropout {reg.get('dropout')}"
        )
    return (
        f"- model: hidden {model.get('hidden_sizes')}, {model.get('activation')}, "
        f"init {model.get('init')}, dropout {reg.get('dropout')}"
    )


def scratch_section(metrics: dict[str, Any]) -> list[str]:
    """Transfer learning against the same network and budget trained from scratch."""
    scratch = metrics.get("from_scratch")
    if scratch is None:
        return []
    lines = [
        "## Transfer vs. from scratch",
        "",
        "Same architecture, data, epochs, optimizer and seed; only the starting weights "
        "(and the frozen layers) differ.",
        "",
        "| start | test acc | best val acc | best epoch | trainable params | s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in (("pretrained (this run)", metrics), ("from scratch", scratch)):
        lines.append(
            f"| {name} | {100 * m['test/acc']:.2f}% | {100 * m.get('val/acc_best', 0):.2f}% "
            f"| {m.get('best_epoch')} | {m.get('trainable_params', 0):,} | {m['wall_s']:.1f} |"
        )
    delta = 100 * (metrics["test/acc"] - scratch["test/acc"])
    verdict = "helps" if delta > 0 else "does not help"
    lines += ["", f"Transfer {verdict} here: {delta:+.2f} points of test accuracy.", ""]
    return lines


def write_report(
    output_dir: Path,
    metrics: dict[str, Any],
    config: dict[str, Any],
    history: Sequence[dict[str, float]],
) -> Path:
    """report.md: the headline numbers, the epoch log, the pictures and the config summary."""
    best = metrics.get("best_epoch")
    stop = (
        f"early stopping ended training after epoch {metrics['epochs_trained']}"
        if metrics.get("stopped_early")
        else f"trained all {metrics.get('epochs_trained', 0)} epochs (no early stop)"
    )
    model, reg = config.get("model", {}), config.get("regularization", {})

    def name(group: str) -> str:  # "torch.optim.SGD" -> "SGD"
        return str(config.get(group, {}).get("_target_", "?")).rsplit(".", 1)[-1]

    lines = [
        "# Run report",
        "",
        f"- **test accuracy {100 * metrics['test/acc']:.2f}%** (loss {metrics['test/loss']:.4f}), "
        f"best epoch {best}, {stop}",
        f"- majority-class baseline {100 * metrics['baseline/test_acc']:.2f}%: "
        f"the model beats it by **{metrics['margin_points']:.2f} points**",
        f"- best val accuracy {100 * metrics.get('val/acc_best', float('nan')):.2f}%, "
        f"{metrics['num_params']:,} parameters, {metrics['wall_s']:.1f} s of training",
        f"- data: `{name('data')}` {metrics.get('split_sizes', {})}",
        _model_line(model, reg),
        f"- optimizer: `{name('optimizer')}` lr {config.get('optimizer', {}).get('lr')}, "
        f"weight decay {reg.get('weight_decay')}, L1 {reg.get('l1')}; loss `{name('loss')}`; "
        f"seed {config.get('seed')}",
        "",
        *doctor_section(metrics.get("doctor")),
        *scratch_section(metrics),
        "## Learning curves",
        "",
        "![learning curves](curves.png)",
        "",
        "| epoch | train loss | train acc | val loss | val acc | lr | s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        v = {
            key: row.get(key, float("nan"))
            for key in ("train/loss", "train/acc", "val/loss", "val/acc")
        }
        mark = " **(best)**" if row["epoch"] == best else ""
        lines.append(
            f"| {row['epoch']}{mark} | {v['train/loss']:.4f} | {100 * v['train/acc']:.2f}% "
            f"| {v['val/loss']:.4f} | {100 * v['val/acc']:.2f}% "
            f"| {row.get('lr', float('nan')):.3g} | {row.get('epoch_s', float('nan')):.2f} |"
        )
    lines += [
        "",
        "## Test set",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![misclassified test images](misclassified.png)",
        "",
        "Full config: `.hydra/config.yaml`; all metrics: `metrics.json`.",
        "",
    ]
    path = output_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def build_report(
    output_dir: Path,
    net: nn.Module,
    test_split: tuple[Tensor, Tensor],
    class_names: Sequence[str],
    image_shape: Sequence[int],
    metrics: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Path]:
    """Write the three pictures and report.md into ``output_dir``; return their paths by name."""
    x, y = test_split
    preds = predict(net, x)
    y = y.cpu()
    history = metrics.get("history", [])
    paths = {
        "curves": plot_curves(
            history,
            metrics.get("best_epoch"),
            bool(metrics.get("stopped_early")),
            output_dir / REPORT_FILES["curves"],
        ),
        "confusion_matrix": plot_confusion_matrix(
            confusion_matrix(y, preds, len(class_names)),
            class_names,
            output_dir / REPORT_FILES["confusion_matrix"],
        ),
        "misclassified": plot_misclassified(
            x, y, preds, class_names, image_shape, output_dir / REPORT_FILES["misclassified"]
        ),
    }
    paths["report"] = write_report(output_dir, metrics, config, history)
    return paths
