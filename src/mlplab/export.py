"""Export a trained model for serving without mlplab: ``python export.py ckpt_path=...
format=onnx|torchscript``.

The exported graph takes what a client has and gives what it wants:

- images: float32 ``(N, C, H, W)`` raw pixel values 0-255 (scaled inside the graph);
- tables: float32 ``(N, F)``, the numeric features in their raw units (NaN for a missing
  value: imputed inside the graph with the training median), then for each categorical
  column one 0/1 column per training category; standardized inside the graph;
- out: class probabilities ``(N, classes)``, or values in the target's units.

The batch size is dynamic. Beside the model, ``model.json`` says all of that (input columns,
class names, targets, the preprocessing constants). Parity is proven at export: the
exported model (run by onnxruntime, or the loaded TorchScript module) against the PyTorch
model on the checkpoint's test split; above :data:`TOLERANCE` nothing is kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mlplab import __version__
from mlplab.checkpoints import trust_packages
from mlplab.errors import ConfigError, ExportError
from mlplab.trained import TrainedModel, load_trained

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
# The most an exported model's output may differ from PyTorch's: absolute for values up to 1
# (probabilities), relative above (a price of 500,000 carries float32's ~0.03 of rounding).
TOLERANCE = 1e-4
SPEC_FILE = "model.json"
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
        fill = torch.tensor([*p["median"], *[0.0] * one_hot])
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
            "category not seen in training); standardized inside the model"
        )
        preprocessing = {k: p[k] for k in ("numeric", "median", "mean", "std", "categorical")}
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
    trained: TrainedModel, fmt: str, output_dir: Path, data_dir: str | None = None
) -> dict[str, Any]:
    """Write ``model.onnx`` or ``model.pt`` and ``model.json`` into ``output_dir`` once the
    exported model matches PyTorch on the test split; return model.json's contents."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not allowed: must be one of {', '.join(FORMATS)}")
    served = serving_model(trained)
    x, _ = trained.own_test_split(data_dir)
    raw = raw_inputs(served, x.cpu())
    with torch.no_grad():
        reference = trained.module.predictions(trained.module(x.cpu()))
        _, in_graph = difference(served(raw).numpy(), reference.numpy())
    if not in_graph <= TOLERANCE:  # the constants in the graph are not mlplab's preprocessing
        raise ExportError(f"the serving model differs from the trained one by {in_graph:.3g}")
    spec = input_spec(trained)
    output_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        example = raw[:1].repeat(2, *[1] * (raw.ndim - 1))  # 2 rows: the batch stays dynamic
        model_file = work / FORMATS[fmt]
        outputs = _EXPORTERS[fmt](served, example, model_file, spec["output"]["name"])(raw)
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
                "examples": len(raw),
                "split": "test",
                "against": "the PyTorch model",
                "max_abs_diff": absolute,
                "max_scaled_diff": scaled,
                "tolerance": TOLERANCE,
            },
        }
        os.replace(model_file, output_dir / FORMATS[fmt])
        (output_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return spec


def difference(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The largest absolute difference, and the largest scaled one (absolute for values up
    to 1, relative above) that :data:`TOLERANCE` bounds."""
    gap = np.abs(outputs - reference)
    return float(gap.max()), float((gap / np.maximum(np.abs(reference), 1.0)).max())


def _onnx(served: ServingModel, example: Tensor, path: Path, output_name: str):
    """Export with torch's ONNX exporter; return onnxruntime's forward."""
    import onnxruntime

    # The exporter's progress notes ("torchvision is not installed", optimizer passes).
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "torch.onnx" else logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            served,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]


def _torchscript(served: ServingModel, example: Tensor, path: Path, output_name: str):
    """Trace to TorchScript and save; return the reloaded module's forward."""
    from lightning.pytorch.core.module import _jit_is_scripting

    # Lightning's own switch for tracing a LightningModule (see its ``to_torchscript``).
    with warnings.catch_warnings(), _jit_is_scripting():
        warnings.simplefilter("ignore")  # torch 2.13 marks torch.jit deprecated
        torch.jit.save(torch.jit.trace(served, example), str(path))
        loaded = torch.jit.load(str(path))

    def forward(x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return forward


_EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript}


def export_command(cfg: DictConfig) -> dict[str, Any]:
    """``export.py``: export, print the files and the parity; return model.json's contents."""
    trust_packages(cfg.get("trusted_packages"))  # the command line's, never a checkpoint's
    trained = load_trained(cfg.ckpt_path)
    output_dir = Path(cfg.output_dir)
    spec = export_model(trained, str(cfg.format), output_dir, cfg.get("data_dir"))
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
    print(f"exported: {output_dir / spec['model']} and {output_dir / SPEC_FILE}")
    return spec
