"""``export.py``: ONNX and TorchScript models that serve without mlplab, with proven parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
import yaml
from mnist_mlp.train import train
from PIL import Image

import mlplab
from mlplab import export
from mlplab.errors import ExportError
from mlplab.export import export_model
from mlplab.testing import PROJECT, QUIET_RUN, compose_config, houses, run_command, run_python
from mlplab.trained import load_trained


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn")
    overrides = [*QUIET_RUN, "model=cnn", "trainer.max_epochs=1", "trainer.limit_train_batches=5"]
    train(compose_config(overrides, out))
    return out


def serve(model_file, pixels_or_rows: np.ndarray) -> np.ndarray:
    """What a client runs: onnxruntime on float32 inputs, nothing of mlplab."""
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: pixels_or_rows.astype(np.float32)})[0]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "table_regression", "table_classification"])
def test_exported_model_matches_pytorch_on_the_test_split(
    model, fmt, digits_run, cnn_run, table_runs, tmp_path
):
    run = {
        "mlp": digits_run,
        "cnn": cnn_run,
        "table_regression": table_runs["price"],
        "table_classification": table_runs["band"],
    }[model]
    spec = export_model(load_trained(run), fmt, tmp_path)
    assert spec["parity"]["max_scaled_diff"] <= 1e-4 and spec["parity"]["examples"] > 10
    assert (tmp_path / "model" / spec["model"]).is_file()
    assert json.loads((tmp_path / "model" / "model.json").read_text()) == json.loads(
        json.dumps(spec)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no leftovers


def test_export_py_writes_an_onnx_digits_model_a_client_serves_with_onnxruntime(
    digits_run, tmp_path
):
    out = tmp_path / "export"
    proc = run_command(
        "export.py", f"ckpt_path={digits_run}", "format=onnx", f"hydra.run.dir={out}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "onnx vs PyTorch, max abs difference" in proc.stdout
    out = out / "model"
    assert f"exported: {out / 'model.onnx'} and {out / 'model.json'}" in proc.stdout
    spec = json.loads((out / "model.json").read_text())
    assert spec["input"]["shape"] == ["batch", 1, 28, 28]
    assert spec["output"] == {**spec["output"], "name": "probabilities", "shape": ["batch", 10]}
    # Raw pixels 0-255, any batch size: the probabilities mlplab.predict gives for them.
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    served = serve(out / "model.onnx", pixels[:, None].astype(np.float32))
    expected = mlplab.predict(digits_run, pixels).filter(like="prob_").to_numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert served.shape == (3, 10)


def test_an_exported_table_model_takes_raw_columns_as_its_json_describes(table_runs, tmp_path):
    spec = export_model(load_trained(table_runs["price"]), "onnx", tmp_path)
    rows = houses(n=20, seed=3)
    # A client builds the input from model.json alone: raw numbers (NaN where missing), then
    # one 0/1 column per category.
    columns = spec["input"]["columns"]
    assert columns == ["sqm", "rooms", "city=east", "city=north", "city=south"]
    x = np.stack(
        [
            rows[c].to_numpy(dtype=float)
            if "=" not in c
            else (rows[c.split("=")[0]] == c.split("=")[1]).to_numpy(dtype=float)
            for c in columns
        ],
        axis=1,
    )
    assert np.isnan(x).any()  # rows 3 and 8 lack sqm: imputed inside the graph
    served = serve(tmp_path / "model" / "model.onnx", x)
    expected = mlplab.predict(table_runs["price"], rows).prediction.to_numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5)
    assert spec["output"]["shape"] == ["batch"] and spec["targets"] == ["price"]


@pytest.mark.parametrize("target", ["price", "band"])
def test_rows_with_gaps_in_every_column_get_what_predict_gives(table_runs, target, tmp_path):
    """A missing category is the training mode in the graph, as in predict.py (NaN in its
    0/1 columns); an unseen one is all 0 in both; the parity check covers a row with every
    value missing."""
    spec = export_model(load_trained(table_runs[target]), "onnx", tmp_path)
    assert spec["parity"]["rows_with_every_value_missing"] == 1
    rows = houses(n=12, seed=5)
    rows.loc[[0, 1, 2], "city"] = np.nan  # a gap in the categorical column
    rows.loc[[2, 3], "rooms"] = np.nan
    rows.loc[2, "sqm"] = np.nan  # row 2: every feature missing
    rows.loc[4, "city"] = "west"  # a city never seen in training
    columns = spec["input"]["columns"]
    x = np.stack(
        [
            rows[c].to_numpy(dtype=float)
            if "=" not in c
            else np.where(
                rows[c.split("=")[0]].isna(), np.nan, rows[c.split("=")[0]] == c.split("=")[1]
            ).astype(float)
            for c in columns
        ],
        axis=1,
    )
    served = serve(tmp_path / "model" / "model.onnx", x)
    expected = mlplab.predict(table_runs[target], rows)
    values = expected.filter(like="prob_") if target == "band" else expected.prediction
    np.testing.assert_allclose(served, values.to_numpy(), rtol=1e-5, atol=1e-6)


def test_torchscript_model_loads_and_runs_without_mlplab(cnn_run, tmp_path):
    spec = export_model(load_trained(cnn_run), "torchscript", tmp_path)
    script = (
        "import sys, torch; m = torch.jit.load(sys.argv[1]);"
        "print(tuple(m(torch.full((4, 1, 28, 28), 255.0)).shape), 'mlplab' in sys.modules)"
    )
    proc = run_python("-c", script, str(tmp_path / "model" / spec["model"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(4, 10) False"


def test_a_model_beyond_the_tolerance_is_refused_and_nothing_is_written(
    digits_run, tmp_path, monkeypatch
):
    # The serving model in PyTorch gives the trained model's outputs exactly (raw pixels /
    # 255 are the training inputs, bit for bit); onnxruntime's kernels round differently
    # (~1e-7 on 10,000 probabilities): beyond a tolerance of 1e-12.
    monkeypatch.setattr(export, "TOLERANCE", 1e-12)
    with pytest.raises(ExportError, match=r"differ from PyTorch's by .* not written"):
        export_model(load_trained(digits_run), "onnx", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_format_is_one_line_and_exit_2(digits_run, tmp_path):
    proc = run_command(
        "export.py", f"ckpt_path={digits_run}", "format=tflite", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: format='tflite' is not allowed: must be one of onnx, torchscript"
    )


def test_the_serving_model_is_the_trained_one_on_raw_inputs(table_runs):
    trained = load_trained(table_runs["band"])
    served = export.serving_model(trained)
    x, _ = trained.own_test_split()
    raw = export.raw_inputs(served, x)
    numeric = len(trained.preprocessing["numeric"])
    assert raw[:, :numeric].abs().mean() > 1.0  # raw units (square metres), not z-scores
    with torch.no_grad():
        np.testing.assert_allclose(
            served(raw).numpy(), trained.module(x).softmax(-1).numpy(), atol=1e-6
        )


def test_the_docs_serving_snippet_runs_on_an_exported_model(digits_run, tmp_path):
    """docs/model.md's onnxruntime snippet, with its two paths pointed at a real export."""
    page = (PROJECT / "docs" / "model.md").read_text()
    section = page[page.index("## Serving without mlplab") :]
    snippet = section[section.index("```python\n") + 10 :]
    snippet = snippet[: snippet.index("```")]
    export_model(load_trained(digits_run), "onnx", tmp_path / "export")  # its model/ folder
    trained = load_trained(digits_run)
    x, _ = trained.own_test_split()
    Image.fromarray((x[0, 0] * 255).round().to(torch.uint8).numpy()).save(tmp_path / "digit.png")
    placeholder = snippet.split('folder = "')[1].split('"')[0]
    script = snippet.replace(placeholder, str(tmp_path / "export" / "model"))
    proc = run_python("-c", script.replace('"digit.png"', f'"{tmp_path / "digit.png"}"'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = mlplab.predict(trained, tmp_path / "digit.png")
    label, confidence = proc.stdout.split()
    assert label == str(expected.prediction.iloc[0])
    assert confidence == f"{expected.filter(like='prob_').to_numpy().max():.1%}"


def test_a_moved_table_is_read_from_data_dir_for_the_parity_check(table_runs, tmp_path):
    trained = load_trained(table_runs["price"])
    moved = tmp_path / "moved"
    moved.mkdir()
    original = Path(trained.config.data.path)
    pd.read_csv(original).head(100).to_csv(moved / original.name, index=False)
    spec = export_model(trained, "onnx", tmp_path / "export", data_dir=str(moved))
    assert spec["parity"]["examples"] == 15  # the test split of the 100 rows found there


def card(folder: Path) -> tuple[dict, str]:
    """An exported model's README.md: its YAML front matter, and the text under it."""
    _, front, body = (folder / "model" / "README.md").read_text().split("---\n", 2)
    return yaml.safe_load(front), body


def test_the_model_card_gives_the_tested_figures_of_this_checkpoint(digits_run, tmp_path):
    spec = export_model(load_trained(digits_run), "onnx", tmp_path)
    front, body = card(tmp_path)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert front["task"] == "classification" and front["classes"] == [str(d) for d in range(10)]
    assert front["input"] == {"name": "input", "dtype": "float32", "shape": ["batch", 1, 28, 28]}
    assert front["test_metrics"] == {
        k: v for k, v in metrics.items() if k.startswith(("test/", "baseline/"))
    }
    assert front["data"] == {"name": metrics["data"], "split_sizes": metrics["split_sizes"]}
    assert front["mlplab_version"] == spec["mlplab_version"] == mlplab.__version__
    assert f"- `test/acc`: {metrics['test/acc']:.4g}" in body
    # The training config, as the checkpoint stores it.
    config = yaml.safe_load(body.split("```yaml\n")[1].split("```")[0])
    assert config["seed"] == load_trained(digits_run).config.seed and "trainer" in config


def test_a_checkpoint_its_run_did_not_test_has_unknown_test_figures(digits_run, tmp_path):
    last = digits_run / "checkpoints" / "last.ckpt"
    assert json.loads((digits_run / "metrics.json").read_text())["best_checkpoint"].endswith(
        "best.ckpt"
    )
    export_model(load_trained(last), "onnx", tmp_path)
    front, body = card(tmp_path)
    assert front["test_metrics"] == "unknown" and front["data"]["name"] == "unknown"
    assert "did not record a test of it" in body


def test_a_tampered_metrics_json_gives_the_card_nothing_but_numbers(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    best = str(run / "checkpoints" / "best.ckpt")
    tampered = {"best_checkpoint": best, "test/acc": "1.0", "test/loss": float("inf"),
                "test/f1": True, "baseline/test_acc": 0.1, "data": ["x"],
                "split_sizes": 3}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(tampered))
    export_model(load_trained(run), "onnx", tmp_path / "out")
    front, _ = card(tmp_path / "out")
    assert front["test_metrics"] == {"baseline/test_acc": 0.1}
    assert front["data"] == {"name": "unknown", "split_sizes": "unknown"}


def test_a_regression_models_card_names_its_target(table_runs, tmp_path):
    export_model(load_trained(table_runs["price"]), "onnx", tmp_path)
    front, body = card(tmp_path)
    assert front["task"] == "regression" and front["targets"] == ["price"]
    assert "Predicts `price`." in body and "Columns, in order: `sqm`, `rooms`" in body
    assert set(front["test_metrics"]) >= {"test/loss"}
