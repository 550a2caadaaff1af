"""Transfer learning: start from a network trained earlier, with a new output layer.

The hidden layers learned on one data set (say, MNIST digits) become the starting point on
another (Fashion-MNIST); the output layer is new, sized for the new classes; the chosen hidden
layers are frozen, the rest fine-tuned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from mlplab.errors import CheckpointError, ConfigError
from mlplab.instantiate import buildable
from mlplab.record import RunRecord
from mlplab.resume import find_checkpoint
from mlplab.stored import load_checkpoint, run_config


def source_network(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The network config stored in ``checkpoint`` (a transfer run's: its own source's), the
    checkpoint's state, and its path. The config was checked when read: it builds only from
    trusted packages (:func:`mlplab.checkpoints.run_config`)."""
    path = find_checkpoint(checkpoint, "best.ckpt")
    state = load_checkpoint(path)
    stored = OmegaConf.to_container(run_config(state, path).model, resolve=True)
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} stores a model config that is no mapping: not mlplab's")
    model = {str(k): v for k, v in stored.items()}
    if "checkpoint" in model:  # a transfer run: the architecture is its source's
        model = {**source_network(model["checkpoint"])[0], "dropout": model.get("dropout", 0.0)}
    return model, state, path


@buildable
def pretrained_net(
    input_shape: Sequence[int],
    num_outputs: int,
    checkpoint: str,
    freeze: Sequence[int] = (),
    dropout: float = 0.0,
    compile: bool = False,
) -> nn.Module:
    """The network of ``checkpoint`` with its hidden layers as trained and a new output layer.

    The network is built from the config stored in the checkpoint (any ``nn.Module`` built
    from ``input_shape`` and ``num_outputs`` whose last ``nn.Linear`` is its output layer),
    once for the source's shapes and once for this data's; every ``nn.Linear`` but the last
    takes the trained weights.

    Args:
        input_shape: one example's shape in this data set; its size must match the checkpoint's.
        num_outputs: classes of this data set; the new output layer has this many outputs.
        checkpoint: a checkpoint file written by ``train.py``, or its run dir (best checkpoint).
        freeze: hidden layers (1 = the first) whose weights stay fixed; the others and the new
            output layer are trained.
        dropout: the network's ``dropout`` argument in this run.
        compile: the network's ``compile`` argument in this run.
    """
    if not checkpoint:  # a `???` in the config is caught earlier, by validate_config
        raise ConfigError(
            "model.checkpoint is not set: train on MNIST first (python train.py "
            "experiment=lesson data.data_dir=...) and pass model.checkpoint=<its run dir>"
        )
    model, state, path = source_network(checkpoint)
    weights = {
        name.removeprefix("net."): tensor
        for name, tensor in state["state_dict"].items()
        if name.startswith("net.")
    }
    hparams = state.get("hyper_parameters") or {}
    source_shape = tuple(hparams.get("input_shape") or ())
    if math.prod(source_shape) != math.prod(input_shape):
        raise CheckpointError(
            f"{path} was trained on {math.prod(source_shape)} inputs, this data has "
            f"{math.prod(input_shape)}: transfer needs inputs of the same size"
        )
    # The source network exactly as trained (its dropout shapes its list of layers).
    source = instantiate(model, input_shape=source_shape, num_outputs=hparams["num_outputs"])
    source.load_state_dict(weights)
    net = instantiate(
        {**model, "dropout": dropout, **({"compile": compile} if "compile" in model else {})},
        input_shape=tuple(input_shape),
        num_outputs=num_outputs,
    )
    hidden = len(_linears(net)) - 1
    if any(not isinstance(i, int) or not 1 <= i <= hidden for i in freeze):
        raise ConfigError(
            f"model.freeze={list(freeze)} is not allowed: hidden layers are numbered 1 to {hidden}"
        )
    hidden_pairs = zip(_linears(net)[:-1], _linears(source)[:-1], strict=True)
    for layer, (target, trained) in enumerate(hidden_pairs, start=1):
        target.load_state_dict(trained.state_dict())
        target.requires_grad_(layer not in freeze)
    return net


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


class CompareFromScratch(L.Callback):
    """Transfer learning's yardstick: the same architecture, data, budget and seed trained
    from scratch, once this run has finished fitting.

    The comparison runs in ``from_scratch/`` (CSV logger only, so no second W&B run); its
    figures go into this run's ``metrics.json`` (``from_scratch``) and report.md.

    Args:
        enabled: run the comparison (``compare_from_scratch=true``).
    """

    KEYS = (
        "test/acc",
        "test/loss",
        "val/acc_best",
        "best_epoch",
        "epochs_trained",
        "trainable_params",
        "wall_s",
    )

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = RunRecord.of(trainer)
        if not self.enabled or record is None or not trainer.is_global_zero:
            return
        if record.flow is None:
            raise ConfigError("compare_from_scratch=true needs a training run (TrainingRun)")
        # The same flow, for the same config from scratch.
        scratch = record.flow(from_scratch_config(record.run_config))
        record.add(
            "from_scratch",
            {k: scratch[k] for k in self.KEYS if k in scratch},
            # The table needs this run's test figures: made when the report is written.
            report=lambda metrics: scratch_section(metrics, scratch),
        )


def scratch_section(metrics: dict[str, Any], scratch: dict[str, Any]) -> list[str]:
    """Transfer learning against the same network and budget trained from scratch."""
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
    return [*lines, "", f"Transfer {verdict} here: {delta:+.2f} points of test accuracy."]


def from_scratch_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the pretrained network replaced by a fresh one of the same architecture.

    Same data, budget, optimizer and seed; its own output dir (``from_scratch/``) and only
    the CSV logger, so the comparison does not add a second W&B run.
    """
    scratch = cfg.copy()
    with open_dict(scratch):
        scratch.model = {
            **source_network(cfg.model.checkpoint)[0],
            "dropout": cfg.model.dropout,
        }
        if "compile" in scratch.model:
            scratch.model.compile = cfg.model.get("compile", False)
        scratch.compare_from_scratch = False
        scratch.output_dir = str(Path(cfg.output_dir) / "from_scratch")
        scratch.ckpt_path = None
        scratch.logger = {k: v for k, v in (cfg.get("logger") or {}).items() if k == "csv"}
        if not scratch.logger and "lr_monitor" in scratch.callbacks:
            scratch.callbacks.lr_monitor = None
    return scratch
