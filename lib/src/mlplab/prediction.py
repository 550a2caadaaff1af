"""Predictions of a trained model on new data: ``mlplab.predict(checkpoint, data)`` and
``python predict.py ckpt_path=... input=...``.

The input is what a user has: a table (CSV, TSV, Parquet, or a data frame) with the
features the model was trained on, with or without the target; a folder of PNG/JPEG images,
one image, an IDX images file, or an array of raw pixels (0-255). Tables get the
checkpoint's own preprocessing (fitted on its training split, never refitted); images are
converted to the checkpoint's channels and scaled as in training. One output row per input
row, in input order.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor

from mlplab.cli import ignore_harmless_warnings
from mlplab.data.idx import read_idx
from mlplab.data.images import IMAGE_SUFFIXES, read_image
from mlplab.data.loader import PermutationSampler, TensorBatchLoader
from mlplab.data.table import TABLE_SUFFIXES, read_table, refuse_nested
from mlplab.errors import ConfigError, DataError
from mlplab.rundir import atomic_path, writing_run_dir
from mlplab.stored import trust_packages
from mlplab.trained import TrainedModel, load_trained

IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")
PREDICTIONS_FILE = "predictions.csv"


def predict(
    checkpoint: str | Path | TrainedModel,
    data: str | Path | pd.DataFrame | np.ndarray,
    *,
    id_column: str | None = None,
    resize: bool = False,
    batch_size: int = 1024,
    accelerator: str = "cpu",
) -> pd.DataFrame:
    """The model's predictions for ``data``, one row per input row, in input order.

    Columns: the input's ``id_column`` (else ``row``, or ``file`` for images; ``<name>_input``
    if an output column has its name); then for
    classification ``prediction`` (the class name) and ``prob_<class>`` per class, summing to
    1; for regression ``prediction`` in the target's units (``prediction_<target>`` for each
    of several targets).

    Args:
        checkpoint: a ``.ckpt`` file or a run dir (its ``best.ckpt``), or a loaded model.
        data: a table file or data frame; an image folder, an image, an IDX images file, or
            raw pixels ``(N, H, W)`` / ``(N, C, H, W)`` in 0-255.
        id_column: a column of the table to identify each row by.
        resize: resize images of another size to the model's (else they are refused).
        batch_size: inputs per forward pass.
        accelerator: Lightning's ``accelerator`` (``cpu``, ``gpu``, ``auto``).
    """
    trained = checkpoint if isinstance(checkpoint, TrainedModel) else load_trained(checkpoint)
    trained.require_finite()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
    ids, x = model_inputs(trained, data, id_column, resize)
    outputs = _predict_all(trained.module, x, batch_size, accelerator)
    unfinished = ~outputs.reshape(len(outputs), -1).isfinite().all(1)
    if unfinished.any():
        first = ids.iloc[int(unfinished.nonzero()[0, 0])]
        raise DataError(
            f"the model's output is NaN or infinite for {int(unfinished.sum())} of "
            f"{len(outputs)} inputs (the first: {ids.name} {first}): no predictions written; "
            "check those inputs' values"
        )
    return _prediction_frame(trained, ids, outputs)


def model_inputs(
    trained: TrainedModel, data: Any, id_column: str | None = None, resize: bool = False
) -> tuple[pd.Series, Tensor]:
    """``data`` as the model's input tensor, with the name of each row."""
    if isinstance(data, pd.DataFrame):
        return _table_inputs(trained, data, "the data frame", id_column)
    if isinstance(data, np.ndarray | Tensor):
        pixels = np.asarray(data)
        ids = pd.Series(range(len(pixels)), name="row")
        return ids, _image_tensor(trained, pixels, resize, [str(i) for i in ids])
    path = Path(data).expanduser()
    name = path.name.lower()
    if path.is_dir():
        ids, images = _read_image_folder(trained, path, resize)
        return ids, images
    if not path.exists():
        raise DataError(f"input={path} does not exist: give a table, an image folder or a file")
    if name.endswith(TABLE_SUFFIXES):
        return _table_inputs(trained, read_table(path, "input"), path, id_column)
    if name.endswith(IMAGE_SUFFIXES):
        return pd.Series([path.name], name="file"), _image_tensor(
            trained, _read_image(path, trained.input_shape, resize)[None], resize, [path.name]
        )
    if name.endswith(IDX_SUFFIXES):
        pixels = read_idx(path)
        ids = pd.Series([f"{path.name}[{i}]" for i in range(len(pixels))], name="file")
        return ids, _image_tensor(trained, pixels, resize, list(ids))
    raise DataError(
        f"input={path}: not a table ({', '.join(TABLE_SUFFIXES)}), an image "
        f"({', '.join(IMAGE_SUFFIXES)}), an IDX file or a folder of images"
    )


def _table_inputs(
    trained: TrainedModel, table: pd.DataFrame, where: Any, id_column: str | None
) -> tuple[pd.Series, Tensor]:
    if not trained.preprocessing:
        raise DataError(
            f"{trained.path} was trained on images {trained.input_shape}, not a table: give "
            "a folder of images, an image or an IDX file"
        )
    if id_column is not None and id_column not in table.columns:
        raise DataError(
            f"id_column={id_column!r} is not a column of {where}; its columns: "
            f"{', '.join(map(str, table.columns))}"
        )
    if table.empty:
        raise DataError(f"{where} holds no rows")
    datamodule = trained.datamodule
    datamodule.require_features(table, where)
    refuse_nested(table[trained.preprocessing["features"]], where)
    x = datamodule.encode(table, "input")
    ids = table[id_column] if id_column else pd.Series(range(len(table)), name="row")
    return ids.reset_index(drop=True), x


def _read_image_folder(
    trained: TrainedModel, folder: Path, resize: bool
) -> tuple[pd.Series, Tensor]:
    if not trained.is_images:
        raise DataError(f"{trained.path} was trained on a table, not images: give a table file")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith(".")  # hidden
    )
    if not files:
        raise DataError(
            f"{folder} holds no {', '.join(IMAGE_SUFFIXES)} files: give a folder of images"
        )
    pixels = np.stack([_read_image(f, trained.input_shape, resize) for f in files])
    names = [f.name for f in files]
    return pd.Series(names, name="file"), _image_tensor(trained, pixels, resize, names)


def _read_image(path: Path, shape: tuple[int, ...], resize: bool) -> np.ndarray:
    """One image file as uint8 ``(C, H, W)`` in the model's channels and size."""
    if len(shape) != 3:
        raise DataError(f"{path} is an image, but the model was trained on a table")
    if shape[0] not in (1, 3):
        raise DataError(f"the model takes {shape[0]}-channel images: give an IDX file or array")
    return read_image(path, shape[0], shape[1:], resize)


def _image_tensor(
    trained: TrainedModel, pixels: np.ndarray, resize: bool, names: list[str]
) -> Tensor:
    """Raw pixels ``(N, H, W)`` or ``(N, C, H, W)`` in 0-255 as the model's float input."""
    if not trained.is_images:
        raise DataError(f"{trained.path} was trained on a table, not images: give a table file")
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4 or len(pixels) == 0:
        raise DataError(
            f"images must be (N, H, W) or (N, C, H, W) with N >= 1; got shape {pixels.shape}"
        )
    if pixels.shape[1:] != trained.input_shape:
        if not resize or pixels.shape[1] != trained.input_shape[0]:
            raise DataError(
                f"images {names[0]}... have shape {tuple(pixels.shape[1:])} but the model "
                f"takes {trained.input_shape}: "
                + ("resize them, or pass resize=true" if not resize else "convert their channels")
            )
        height, width = trained.input_shape[1:]
        pixels = torch.nn.functional.interpolate(
            torch.as_tensor(pixels, dtype=torch.float32), size=(height, width), mode="bilinear"
        ).numpy()
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise DataError("pixel values must be in 0-255 (raw image values, not scaled)")
    return torch.from_numpy(np.array(pixels, dtype=np.float32)) / 255.0  # a writable copy


def _predict_all(module: L.LightningModule, x: Tensor, batch_size: int, accelerator: str) -> Tensor:
    """``Trainer.predict`` over ``x`` in order, on the module's ``predict_step``."""
    targets = torch.zeros(len(x), dtype=torch.long)  # the loader's batches are (x, y) pairs
    loader = TensorBatchLoader(x, targets, batch_size, PermutationSampler(len(x), False, 0))
    with _without_lightning_notes():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        batches = trainer.predict(module, dataloaders=loader)
    return torch.cat([b.float().cpu() for b in batches])


@contextmanager
def _without_lightning_notes() -> Iterator[None]:
    """Lightning's set-up notes (accelerators found, tips, SLURM hints) are no prediction's
    business; its warnings still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        ignore_harmless_warnings()
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _prediction_frame(trained: TrainedModel, ids: pd.Series, outputs: Tensor) -> pd.DataFrame:
    values = outputs.numpy()
    columns: dict[str, Any] = {}
    if trained.task == "classification":
        names = trained.class_names or []  # set for every classifier (TrainedModel)
        columns["prediction"] = np.asarray(names, dtype=object)[values.argmax(1)]
        for i, name in enumerate(names):
            columns[f"prob_{name}"] = values[:, i]
    else:
        values = values.reshape(len(values), -1)
        targets = trained.targets or [f"{i}" for i in range(values.shape[1])]
        if values.shape[1] == 1:
            columns["prediction"] = values[:, 0]
        else:
            for i, target in enumerate(targets):
                columns[f"prediction_{target}"] = values[:, i]
    # The input's own column keeps its values whatever its name: one named like an output
    # column (an id column called "prediction") becomes "<name>_input".
    id_name = str(ids.name or "row")
    while id_name in columns:
        id_name += "_input"
    return pd.DataFrame({id_name: ids.to_numpy(), **columns})


def predict_command(cfg: DictConfig) -> dict[str, Any]:
    """``predict.py``: write ``predictions.csv`` into the run dir; return where, and how many."""
    trust_packages(cfg.get("trusted_packages"), cfg)  # the command line's, never a checkpoint's
    frame = predict(
        cfg.ckpt_path,
        cfg.input,
        id_column=cfg.get("id_column"),
        resize=bool(cfg.get("resize", False)),
        batch_size=cfg.get("batch_size", 1024),
        accelerator=cfg.get("accelerator", "cpu"),
    )
    output_dir = Path(cfg.output_dir)
    with (
        writing_run_dir(output_dir, command="predict.py"),
        atomic_path(output_dir / PREDICTIONS_FILE) as tmp,
    ):  # the whole table or none of it, from one writer
        frame.to_csv(tmp, index=False)
    path = output_dir / PREDICTIONS_FILE
    print(f"predictions: {path} ({len(frame)} rows)")
    return {"rows": len(frame), "predictions": str(path)}
