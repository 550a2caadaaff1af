"""Export a trained model for serving without mlplab: ``python export.py ckpt_path=...
format=onnx|torchscript``.

The exported graph takes what a client has and gives what it wants:

- images: float32 ``(N, C, H, W)`` raw pixel values 0-255 (scaled inside the graph);
- tables: float32 ``(N, F)``, the numeric features in their raw units (NaN for a missing
  value: imputed inside the graph with the training median), then for each categorical
  column one 0/1 column per training category; standardized inside the graph;
- out: class probabilities ``(N, classes)``, or values in the target's units.

The batch size is dynamic. Beside the model, ``model.json`` says all of that (input columns,
class names, targets, the preprocessing constants), and ``README.md`` says it to a person
(:mod:`mlplab.model_card`: with the test figures and the training config). Parity is proven
at export: the exported model (run by onnxruntime, or the loaded TorchScript module) against
the PyTorch model on the checkpoint's test split; above :data:`TOLERANCE` nothing is kept.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mlplab import __version__
from mlplab.errors import ConfigError, ExportError
from mlplab.model_card import CARD_FILE, model_card
from mlplab.rundir import fsync_dir, umask_mode, writing_run_dir
from mlplab.stored import trust_packages
from mlplab.trained import TrainedModel, load_trained

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
# The most an exported model's output may differ from PyTorch's: absolute for values up to 1
# (probabilities), relative above (a price of 500,000 carries float32's ~0.03 of rounding).
TOLERANCE = 1e-4
SPEC_FILE = "model.json"
MODEL_DIR = "model"  # the exported model and model.json, as one folder in the run dir
INPUT_NAME = "input"


class ServingModel(nn.Module):
    """The trained network with its input preprocessing and output transform inside: raw
    inputs in (pixels 0-255, or a table's raw feature values), predictions out.

    Per input column: a missing value (NaN) becomes ``fill``, then ``(x - center) / scale``.
    """

    def __init__(self, module: nn.Module, fill: Tensor, center: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("fill", fill)
        self.register_buffer("center", center)
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.where(torch.isnan(x), self.fill, x)
        return self.module.predictions(self.module((x - self.center) / self.scale))


def serving_model(trained: TrainedModel) -> ServingModel:
    """The trained model as a :class:`ServingModel` (eval mode, on the CPU)."""
    if trained.is_images:
        fill, center, scale = torch.zeros(1), torch.zeros(1), torch.full((1,), 255.0)
    else:
        p = trained.preprocessing
        one_hot = trained.input_shape[0] - len(p["numeric"])
        # A missing category (NaN in each of its 0/1 columns) is the training mode, as
        # predict.py fills it; all 0 is a category not seen in training.
        modes = p.get("mode", {})
        fill_one_hot = [float(v == modes.get(c)) for c, vs in p["categorical"].items() for v in vs]
        fill = torch.tensor([*p["median"], *fill_one_hot])
        center = torch.tensor([*p["mean"], *[0.0] * one_hot])
        scale = torch.tensor([*p["std"], *[1.0] * one_hot])
    module = trained.module.to("cpu").eval()
    return ServingModel(module, fill.float(), center.float(), scale.float()).eval()


def raw_inputs(served: ServingModel, x: Tensor) -> Tensor:
    """The raw values a client sends for the model inputs ``x`` (preprocessing undone)."""
    raw = x * served.scale + served.center
    return raw.round() if served.scale.numel() == 1 else raw  # pixels are whole numbers


def input_spec(trained: TrainedModel) -> dict[str, Any]:
    """What the exported graph takes and gives, and the constants it applies: model.json."""
    task = trained.task
    shape: list[Any] = ["batch", *trained.input_shape]
    if trained.is_images:
        described = "raw pixel values 0-255, channels first; divided by 255 inside the model"
        preprocessing: dict[str, Any] = {"scale": 255.0}
        columns = None
    else:
        p = trained.preprocessing
        columns = [*p["numeric"], *(f"{c}={v}" for c, vs in p["categorical"].items() for v in vs)]
        described = (
            "the numeric features in raw units (NaN for a missing value: the training median "
            "is used), then per categorical column one 0/1 column per category (all 0: a "
            "category not seen in training; all NaN: a missing value, the training mode is "
            "used); standardized inside the model"
        )
        preprocessing = {k: p[k] for k in ("numeric", "median", "mean", "std", "categorical")}
        preprocessing["mode"] = {c: p.get("mode", {}).get(c) for c in p["categorical"]}
    outputs = int(trained.module.hparams.num_outputs)
    # A Regressor with one target gives (N,) values; anything else one column per output.
    output_shape = ["batch"] if task == "regression" and outputs == 1 else ["batch", outputs]
    return {
        "task": task,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": shape,
            "description": described,
            **({"columns": columns} if columns else {}),
        },
        "output": {
            "name": "probabilities" if task == "classification" else "values",
            "dtype": "float32",
            "shape": output_shape,
            "description": (
                "class probabilities, in the order of class_names"
                if task == "classification"
                else "predicted values in the target's units, in the order of targets"
            ),
        },
        "class_names": trained.class_names,
        "targets": trained.targets,
        "preprocessing": preprocessing,
    }


def export_model(
    trained: TrainedModel,
    fmt: str,
    output_dir: Path,
    data_dir: str | None = None,
    test_inputs: Tensor | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` or ``model.pt`` and ``model.json`` into ``output_dir`` once the
    exported model matches PyTorch on the test split (``test_inputs``, when the caller has
    loaded them already); return model.json's contents."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not allowed: must be one of {', '.join(FORMATS)}")
    trained.require_finite()
    served = serving_model(trained)
    x = test_inputs if test_inputs is not None else trained.own_test_split(data_dir)[0]
    raw = raw_inputs(served, x.cpu())
    gaps = 0
    if not trained.is_images:  # and a row with every value missing, as predict.py fills it
        x, raw, gaps = torch.cat([x.cpu(), _gap_row(trained)]), torch.cat([raw, _nan_row(raw)]), 1
    with torch.no_grad():
        reference = trained.module.predictions(trained.module(x.cpu()))
        _, in_graph = difference(served(raw).numpy(), reference.numpy())
    if not in_graph <= TOLERANCE:  # the constants in the graph are not mlplab's preprocessing
        raise ExportError(f"the serving model differs from the trained one by {in_graph:.3g}")
    spec = input_spec(trained)
    folder = output_dir / MODEL_DIR
    if folder.exists():
        raise ExportError(f"{folder} exists: export into a new run dir (leave hydra.run.dir unset)")
    output_dir.mkdir(parents=True, exist_ok=True)
    # The model and its model.json are one pair: written into a hidden folder, then renamed
    # into place together, so a kill or a full disk leaves both or neither.
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}-", suffix=".part", dir=output_dir))
    work.chmod(umask_mode(folder=True))  # mkdtemp's 0700 would stay with the renamed folder
    try:
        example = raw[:1].repeat(2, *[1] * (raw.ndim - 1))  # 2 rows: the batch stays dynamic
        model_bytes, run = _EXPORTERS[fmt](served, example, spec["output"]["name"])
        outputs = run(raw)
        absolute, scaled = difference(outputs, reference.numpy())
        if not scaled <= TOLERANCE:
            raise ExportError(
                f"the {fmt} model's outputs differ from PyTorch's by {scaled:.3g} on the "
                f"test split (tolerance {TOLERANCE:g}): not written"
            )
        spec = {
            "format": fmt,
            "model": FORMATS[fmt],
            "checkpoint": str(trained.path),
            "mlplab_version": __version__,
            **spec,
            "parity": {
                "examples": len(raw) - gaps,
                "split": "test",
                "rows_with_every_value_missing": gaps,  # a table's: imputed in the graph
                "against": "the PyTorch model",
                "max_abs_diff": absolute,
                "max_scaled_diff": scaled,
                "tolerance": TOLERANCE,
            },
        }
        _write_synced(work / FORMATS[fmt], model_bytes)
        _write_synced(work / SPEC_FILE, (json.dumps(spec, indent=2) + "\n").encode())
        card = model_card(spec, trained.config, trained.path, __version__)
        _write_synced(work / CARD_FILE, card.encode())
        fsync_dir(work)
        os.rename(work, folder)
        fsync_dir(output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return spec


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` from Python (a full disk is an ``OSError``, not a C++ abort) and sync."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _gap_row(trained: TrainedModel) -> Tensor:
    """The model input predict.py makes of a table row with every feature missing."""
    import pandas as pd

    features = trained.preprocessing["features"]
    table_log = logging.getLogger("mlplab.data.table")
    level = table_log.level
    table_log.setLevel(logging.ERROR)  # its "filled N missing values" notes: meant here
    try:
        return trained.datamodule.encode(pd.DataFrame({c: [np.nan] for c in features}))
    finally:
        table_log.setLevel(level)


def _nan_row(raw: Tensor) -> Tensor:
    return torch.full((1, *raw.shape[1:]), float("nan"), dtype=raw.dtype)


def difference(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The largest absolute difference, and the largest scaled one (absolute for values up
    to 1, relative above) that :data:`TOLERANCE` bounds."""
    gap = np.abs(outputs - reference)
    return float(gap.max()), float((gap / np.maximum(np.abs(reference), 1.0)).max())


def _onnx(served: ServingModel, example: Tensor, output_name: str) -> tuple[bytes, Callable]:
    """Export with torch's ONNX exporter, in memory; return the model file's bytes and
    onnxruntime's forward on them."""
    import onnxruntime

    # The exporter's progress notes ("torchvision is not installed", optimizer passes).
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "torch.onnx" else logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            served,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model_bytes = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return model_bytes, lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]


def _torchscript(served: ServingModel, example: Tensor, output_name: str) -> tuple[bytes, Callable]:
    """Trace to TorchScript, saved in memory; return the file's bytes and the forward of
    the module loaded back from them."""
    from lightning.pytorch.core.module import _jit_is_scripting

    # Lightning's own switch for tracing a LightningModule (see its ``to_torchscript``).
    with warnings.catch_warnings(), _jit_is_scripting():
        warnings.simplefilter("ignore")  # torch 2.13 marks torch.jit deprecated
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.trace(served, example), buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))

    def forward(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return buffer.getvalue(), forward


_EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript}


def export_command(cfg: DictConfig) -> dict[str, Any]:
    """``export.py``: export, print the files and the parity; return model.json's contents."""
    trust_packages(cfg.get("trusted_packages"), cfg)  # the command line's, never a checkpoint's
    trained = load_trained(cfg.ckpt_path, cache_dir=cfg.paths.cache_dir)
    output_dir = Path(cfg.output_dir)
    run_id, test_inputs = None, None
    if cfg.get("mlflow_run"):  # checked before anything is written
        if cfg.format != "onnx":
            raise ConfigError(f"mlflow_run logs an ONNX model: format=onnx, not {cfg.format}")
        from mlplab.mlflow_runs import exported_run_id
        from mlplab.stored import MLFLOW_ID_KEY

        run_id = exported_run_id(str(cfg.mlflow_run), trained.checkpoint.get(MLFLOW_ID_KEY))
        test_inputs = trained.own_test_split(cfg.get("data_dir"))[0]  # loaded once: both use it
    with writing_run_dir(output_dir, command="export.py"):
        spec = export_model(trained, str(cfg.format), output_dir, cfg.get("data_dir"), test_inputs)
    parity = spec["parity"]
    scaled = (
        f", {parity['max_scaled_diff']:.2g} relative to the values"
        if parity["max_scaled_diff"] < parity["max_abs_diff"]
        else ""
    )
    print(
        f"parity on the {parity['examples']} test examples: {spec['format']} vs PyTorch, "
        f"max abs difference {parity['max_abs_diff']:.2g}{scaled} "
        f"(tolerance {parity['tolerance']:g})"
    )
    folder = output_dir / MODEL_DIR
    print(f"exported: {folder / spec['model']} and {folder / SPEC_FILE} ({CARD_FILE}: its card)")
    if run_id is not None and test_inputs is not None:
        from mlplab.mlflow_runs import log_exported_model

        examples = raw_inputs(serving_model(trained), test_inputs[:5].cpu())
        uri = log_exported_model(run_id, folder, examples.numpy())
        print(f"logged to MLflow: {uri} (the ONNX model, model.json and its card)")
    return spec
