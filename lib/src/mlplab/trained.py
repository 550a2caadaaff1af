"""A trained model read back from its checkpoint: what ``eval.py``, ``predict.py`` and
``export.py`` start from.

Everything here comes from a file, so it is checked before anything is built from it: the
stored config names trusted packages only (:func:`mlplab.checkpoints.run_config`), the
stored input shape and output count are plain positive integers, and the weights fit the
rebuilt network layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mlplab.data.contract import TASKS
from mlplab.errors import CheckpointError, ConfigError
from mlplab.resume import find_checkpoint
from mlplab.stored import check_compatible, load_checkpoint, run_config


@dataclass
class TrainedModel:
    """A checkpoint's model, ready to use (weights loaded, eval mode), and what it expects.

    Attributes:
        path: the checkpoint file.
        config: the run's resolved config, as stored in the checkpoint.
        module: the LightningModule with the trained weights.
        datamodule: the run's data module, not loaded; a table's fitted preprocessing is
            restored into it, so new rows get exactly the training transform.
        input_shape: one example's shape: ``(C, H, W)`` for images, ``(F,)`` for tables.
        task: ``classification`` or ``regression``.
        class_names: one name per class (classification), else ``None``.
        targets: the predicted columns' names (a table's regression), else ``None``.
        checkpoint: the loaded checkpoint (tensors and plain values).
    """

    path: Path
    config: DictConfig
    module: L.LightningModule
    datamodule: L.LightningDataModule
    input_shape: tuple[int, ...]
    task: str
    class_names: list[str] | None
    targets: list[str] | None
    checkpoint: dict[str, Any]

    @property
    def preprocessing(self) -> dict[str, Any]:
        """A table's fitted preprocessing (feature order, medians, means, categories); ``{}``
        for images, which are only scaled from 0-255 to [0, 1]."""
        return dict(getattr(self.datamodule, "preprocessing", None) or {})

    @property
    def is_images(self) -> bool:
        return len(self.input_shape) == 3

    def require_finite(self) -> None:
        """Refuse, in one line, a model whose weights hold NaN or infinity (a diverged run):
        its every prediction would be meaningless."""
        bad = [
            name
            for name, tensor in self.module.state_dict().items()
            if tensor.is_floating_point() and not bool(tensor.isfinite().all())
        ]
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise CheckpointError(
                f"{self.path} holds NaN or infinite weights ({bad[0]}{more}): the run diverged; "
                "use a checkpoint from before it did, or retrain (e.g. a lower optimizer.lr)"
            )

    def data_config(self, data_dir: str | None = None) -> DictConfig:
        """The config of the data set the model was trained on; with ``data_dir``, read from
        that folder instead: an image data set's files, or a table file of the same name."""
        data = self.config.data
        if not data_dir:
            return data
        if "data_dir" in data:
            return cast(DictConfig, OmegaConf.merge(data, {"data_dir": data_dir}))
        if data.get("path"):
            path = str(Path(data_dir) / Path(data.path).name)
            return cast(DictConfig, OmegaConf.merge(data, {"path": path}))
        raise ConfigError(
            f"data_dir={data_dir} does not apply: the checkpoint's data set "
            f"({data.get('name', data._target_)}) is not read from a folder; choose a "
            "data set with data=... (e.g. data=mnist data.data_dir=...)"
        )

    def test_data(self, data: DictConfig) -> L.LightningDataModule:
        """The data module of ``data``, set up for testing with the preprocessing fitted when
        training (a table's scaling and encoding), never refitted."""
        datamodule = _restored(instantiate(data), self.checkpoint)
        datamodule.setup("test")
        return datamodule

    def own_test_split(self, data_dir: str | None = None) -> tuple[Tensor, Tensor]:
        """The test split of the data set the model was trained on (see :meth:`data_config`),
        as the model's inputs and targets."""
        datamodule = self.test_data(self.data_config(data_dir))
        if tuple(datamodule.input_shape) != self.input_shape:
            raise ConfigError(
                f"the test data has inputs {datamodule.input_shape}, the model "
                f"{self.input_shape}: not the data set it was trained on"
            )
        return datamodule.splits["test"]


def load_trained(
    ckpt_path: str | Path, in_run_dir: str = "best.ckpt", cache_dir: str | None = None
) -> TrainedModel:
    """Load ``ckpt_path`` (a ``.ckpt`` file, or a run dir: its ``in_run_dir`` checkpoint).

    ``cache_dir`` (this machine's ``paths.cache_dir``) replaces the data's stored one: a
    path read from a checkpoint is never one that is written to."""
    path = find_checkpoint(ckpt_path, in_run_dir)
    checkpoint = load_checkpoint(path)
    config = run_config(checkpoint, path)
    if cache_dir is not None and OmegaConf.select(config, "data.cache_dir") is not None:
        config.data.cache_dir = str(cache_dir)
    if "module" not in config or "data" not in config:
        raise CheckpointError(
            f"{path} was written by an older mlplab (no module config): retrain it, or use "
            "it with the mlplab version that wrote it"
        )
    input_shape, num_outputs, task = _trained_for(checkpoint.get("hyper_parameters"), path)
    module = instantiate(config.module, input_shape=input_shape, num_outputs=num_outputs, task=task)
    module.on_load_checkpoint(checkpoint)  # Lightning's hook, as load_from_checkpoint calls it
    check_compatible(checkpoint["state_dict"], module, path)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    datamodule = _restored(instantiate(config.data), checkpoint)
    preprocessing = getattr(datamodule, "preprocessing", None) or {}
    class_names = None
    if task == "classification":
        class_names = preprocessing.get("classes") or getattr(datamodule, "class_names", None)
        class_names = [str(c) for c in class_names or range(num_outputs)]
        if len(class_names) != num_outputs:
            raise CheckpointError(
                f"{path} names {len(class_names)} classes for a model with {num_outputs} "
                "outputs: the checkpoint is inconsistent; retrain it"
            )
    targets = list(getattr(datamodule, "targets", []) or []) if task == "regression" else None
    return TrainedModel(
        path=path,
        config=config,
        module=module,
        datamodule=datamodule,
        input_shape=input_shape,
        task=task,
        class_names=class_names,
        targets=targets or None,
        checkpoint=checkpoint,
    )


def _restored(datamodule: L.LightningDataModule, checkpoint: dict[str, Any]):
    """``datamodule`` with the state its class saved into the checkpoint, if any."""
    stored = checkpoint.get(type(datamodule).__qualname__)
    if stored is not None:
        datamodule.load_state_dict(stored)
    return datamodule


def _trained_for(hparams: Any, path: Path) -> tuple[tuple[int, ...], int, str]:
    """The stored input shape, output count and task, checked to be what train.py writes."""
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path} holds no hyperparameters: not written by mlplab")
    shape: Any = hparams.get("input_shape")
    outputs: Any = hparams.get("num_outputs")
    task: Any = hparams.get("task")
    shape_ok = isinstance(shape, list | tuple) and len(shape) in (1, 3)
    shape_ok = shape_ok and all(isinstance(d, int) and 0 < d <= 1_000_000 for d in shape)
    if not shape_ok or not (isinstance(outputs, int) and 0 < outputs <= 1_000_000):
        raise CheckpointError(
            f"{path} stores input_shape={str(shape)[:60]} and num_outputs={str(outputs)[:20]}: "
            "not a shape mlplab trains on; the checkpoint is damaged or not mlplab's"
        )
    if task not in TASKS:
        raise CheckpointError(f"{path} stores task={str(task)[:40]!r}: must be one of {TASKS}")
    return tuple(shape), outputs, task
