"""Transfer learning: start from an MLP trained earlier, with a new output layer.

The hidden layers learned on one data set (say, MNIST digits) become the starting point on
another (Fashion-MNIST); the output layer is new, sized for the new classes; the chosen hidden
layers are frozen, the rest fine-tuned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mlplab.checkpoints import checkpoint_file, load_checkpoint, run_config
from mlplab.errors import CheckpointError, ConfigError
from mlplab.model import MLP

ARCHITECTURE_KEYS = ("hidden_sizes", "activation", "init")


def pretrained_architecture(checkpoint: str | Path) -> dict[str, Any]:
    """``hidden_sizes``, ``activation`` and ``init`` of the MLP saved in ``checkpoint``."""
    path = checkpoint_file(checkpoint, "best.ckpt")
    return _architecture(run_config(load_checkpoint(path), path).model)


def _architecture(model: Any) -> dict[str, Any]:
    """The architecture in a run's model config; a transfer run's is its own source's."""
    if "checkpoint" in model and "hidden_sizes" not in model:
        return pretrained_architecture(model.checkpoint)
    return {key: model[key] for key in ARCHITECTURE_KEYS}


def pretrained_mlp(
    in_features: int,
    num_classes: int,
    checkpoint: str,
    freeze: Sequence[int] = (),
    dropout: float = 0.0,
    compile: bool = False,
) -> MLP:
    """An MLP with the hidden layers of ``checkpoint`` and a new output layer.

    Args:
        in_features: input size of this data set; must match the checkpoint's.
        num_classes: classes of this data set; the new output layer has this many outputs.
        checkpoint: a checkpoint file written by ``train.py``, or its run dir (best checkpoint).
        freeze: hidden layers (1 = the first) whose weights stay fixed; the others and the new
            output layer are trained.
        dropout: dropout after each hidden layer, as for :class:`~mlplab.model.MLP`.
        compile: ``torch.compile`` the forward pass, as for :class:`~mlplab.model.MLP`.
    """
    if not checkpoint:  # a `???` in the config is caught earlier, by validate_config
        raise ConfigError(
            "model.checkpoint is not set: train on MNIST first (python train.py "
            "experiment=lesson data.data_dir=...) and pass model.checkpoint=<its run dir>"
        )
    path = checkpoint_file(checkpoint, "best.ckpt")
    state = load_checkpoint(path)
    source_model = run_config(state, path).model
    architecture = _architecture(source_model)
    weights = {
        name.removeprefix("net."): tensor
        for name, tensor in state["state_dict"].items()
        if name.startswith("net.")
    }
    linear_weights = [w for name, w in weights.items() if name.endswith("weight")]
    source_in, source_classes = linear_weights[0].shape[1], linear_weights[-1].shape[0]
    if source_in != in_features:
        raise CheckpointError(
            f"{path} was trained on {source_in} inputs, this data has {in_features}: "
            "transfer needs inputs of the same size"
        )
    hidden = len(architecture["hidden_sizes"])
    if any(not isinstance(i, int) or not 1 <= i <= hidden for i in freeze):
        raise ConfigError(
            f"model.freeze={list(freeze)} is not allowed: hidden layers are numbered 1 to {hidden}"
        )
    # The source network exactly as trained (its dropout shapes its list of layers).
    source = MLP(source_in, source_classes, **architecture, dropout=source_model.dropout)
    source.load_state_dict(weights)
    net = MLP(in_features, num_classes, **architecture, dropout=dropout, compile=compile)
    hidden_pairs = zip(_linears(net)[:-1], _linears(source)[:-1], strict=True)
    for layer, (target, trained) in enumerate(hidden_pairs, start=1):
        target.load_state_dict(trained.state_dict())
        target.requires_grad_(layer not in freeze)
    return net


def _linears(net: MLP) -> list[nn.Linear]:
    return [m for m in net.layers if isinstance(m, nn.Linear)]
