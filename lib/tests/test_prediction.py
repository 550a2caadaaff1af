"""``predict.py`` and ``mlplab.predict``: new rows and new images through a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import mlplab
from mlplab.errors import DataError
from mlplab.testing import houses, idx_bytes, run_command
from mlplab.trained import load_trained


def predict_py(checkpoint: Path, path: Path, out: Path, *overrides: str):
    """``python predict.py`` as a user runs it: the finished process."""
    return run_command(
        "predict.py", f"ckpt_path={checkpoint}", f"input={path}", *overrides,
        f"hydra.run.dir={out}",
    )  # fmt: skip


def test_predictions_for_a_folder_of_png_digits(digits_run, tmp_path):
    trained = load_trained(digits_run)
    x, _ = trained.own_test_split()
    pixels = (x[:12, 0] * 255).round().to(torch.uint8).numpy()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in reversed(range(12)):  # written out of order: read in file-name order
        Image.fromarray(pixels[i]).save(folder / f"digit_{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "predict"
    proc = predict_py(digits_run, folder, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"predictions: {out / 'predictions.csv'} (12 rows)" in proc.stdout
    frame = pd.read_csv(out / "predictions.csv", dtype={"prediction": str})
    assert list(frame.file) == [f"digit_{i:02d}.png" for i in range(12)]
    assert list(frame.columns) == ["file", "prediction", *(f"prob_{c}" for c in "0123456789")]
    with torch.no_grad():  # the same pixels through the model in this process
        expected = trained.module(x[:12]).softmax(-1).numpy()
    np.testing.assert_allclose(frame.filter(like="prob_").to_numpy(), expected, atol=1e-6)
    assert list(frame.prediction) == [str(i) for i in expected.argmax(1)]


def test_images_of_another_size_are_refused_unless_resized_and_colour_is_converted(
    digits_run, tmp_path
):
    big = tmp_path / "big.png"
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8), mode="RGB").save(big)
    with pytest.raises(DataError, match="is 32x32, not the 28x28 expected"):
        mlplab.predict(digits_run, big)
    frame = mlplab.predict(digits_run, big, resize=True)
    assert list(frame.file) == ["big.png"]
    assert frame.filter(like="prob_").sum(axis=1).round(5).tolist() == [1.0]


def test_an_idx_file_and_an_array_of_pixels_give_the_same_predictions(digits_run, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    idx = tmp_path / "new-images-idx3-ubyte.gz"
    idx.write_bytes(idx_bytes(pixels))
    from_file = mlplab.predict(digits_run, idx)
    from_array = mlplab.predict(digits_run, pixels)
    assert list(from_file.file) == [f"{idx.name}[{i}]" for i in range(5)]
    np.testing.assert_array_equal(
        from_file.filter(like="prob_").to_numpy(), from_array.filter(like="prob_").to_numpy()
    )


def test_a_regression_table_without_its_target_gets_values_in_the_targets_units(
    table_runs, tmp_path
):
    new = houses(n=60, seed=1)
    path = tmp_path / "new.csv"
    new.drop(columns=["price", "band"]).to_csv(path, index=False)
    out = tmp_path / "predict"
    proc = predict_py(table_runs["price"], path, out, "id_column=house_id")
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_csv(out / "predictions.csv")
    assert list(frame.columns) == ["house_id", "prediction"]
    assert list(frame.house_id) == list(new.house_id)  # file order, the input's ids
    # In the target's units (prices of ~100,000s), and close to the true prices.
    residual = ((frame.prediction - new.price) ** 2).sum()
    r2 = 1 - residual / ((new.price - new.price.mean()) ** 2).sum()
    assert r2 > 0.8, r2
    # The checkpoint's preprocessing, not one refitted on these 60 rows: one row alone
    # gets the same prediction as within the file.
    alone = mlplab.predict(table_runs["price"], new.drop(columns="price").iloc[[7]])
    assert alone.prediction.iloc[0] == pytest.approx(frame.prediction.iloc[7], rel=1e-5)


def test_a_classification_table_with_an_id_column_gets_probabilities_that_sum_to_one(
    table_runs, tmp_path
):
    new = houses(n=50, seed=2)
    path = tmp_path / "new.parquet"
    new.to_parquet(path)  # with its target column: ignored
    out = tmp_path / "predict"
    proc = predict_py(table_runs["band"], path, out, "id_column=house_id")
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_csv(out / "predictions.csv")
    assert list(frame.columns) == ["house_id", "prediction", "prob_cheap", "prob_dear"]
    assert list(frame.house_id) == list(new.house_id)
    np.testing.assert_allclose(frame[["prob_cheap", "prob_dear"]].sum(axis=1), 1.0, atol=1e-6)
    picked = np.where(frame.prob_dear > frame.prob_cheap, "dear", "cheap")
    assert list(frame.prediction) == list(picked)
    assert (frame.prediction == new.band).mean() > 0.8


def test_an_id_column_named_like_an_output_column_keeps_its_values(table_runs):
    new = houses(n=20, seed=3).rename(columns={"house_id": "prediction"})
    frame = mlplab.predict(table_runs["band"], new, id_column="prediction")
    assert list(frame.columns) == ["prediction_input", "prediction", "prob_cheap", "prob_dear"]
    assert list(frame.prediction_input) == list(new.prediction)
    assert set(frame.prediction) <= {"cheap", "dear"}


def bad_inputs(tmp_path, table_runs, digits_run) -> dict[str, tuple]:
    """Each bad input: (checkpoint, input path, extra overrides, the error's words)."""
    lacking = tmp_path / "lacking.csv"
    houses(n=10).drop(columns="rooms").to_csv(lacking, index=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG not really")
    empty = tmp_path / "empty"
    empty.mkdir()
    good_table = tmp_path / "good.csv"
    houses(n=10).to_csv(good_table, index=False)
    stray = tmp_path / "stray.csv"
    frame = houses(n=10).astype({"sqm": object})
    frame.loc[4, "sqm"] = "about 80"
    frame.to_csv(stray, index=False)
    price, digits = table_runs["price"], digits_run
    return {
        "missing feature column": (price, lacking, [], "column 'rooms', a feature the model"),
        "unknown id column": (price, good_table, ["id_column=nope"], "id_column='nope' is not"),
        "a number column with text": (price, stray, [], "column 'sqm', numeric in training"),
        "unreadable image": (digits, broken, [], "cannot read image"),
        "empty folder": (digits, empty, [], "holds no .png, .jpg, .jpeg, .bmp, .webp files"),
        "a table for an image model": (digits, good_table, [], "trained on images (1, 28, 28)"),
        "images for a table model": (price, broken, [], "trained on a table, not images"),
        "no such input": (price, tmp_path / "nope.csv", [], "does not exist"),
    }


BAD = [
    "missing feature column",
    "unknown id column",
    "a number column with text",
    "unreadable image",
    "empty folder",
    "a table for an image model",
    "images for a table model",
    "no such input",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error(case, table_runs, digits_run, tmp_path):
    checkpoint, path, overrides, words = bad_inputs(tmp_path, table_runs, digits_run)[case]
    options = dict(o.split("=", 1) for o in overrides)
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        mlplab.predict(checkpoint, path, **options)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if i else c for i, c in enumerate(BAD)],
)
def test_bad_input_through_predict_py_is_one_line_and_exit_2(
    case, table_runs, digits_run, tmp_path
):
    checkpoint, path, overrides, words = bad_inputs(tmp_path, table_runs, digits_run)[case]
    out = tmp_path / "predict"
    proc = predict_py(checkpoint, path, out, *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "predictions.csv").exists()


def test_the_python_function_prints_nothing_of_lightnings_set_up(digits_run, capfd):
    frame = mlplab.predict(digits_run, np.zeros((3, 28, 28), dtype=np.uint8))
    assert len(frame) == 3
    out, err = capfd.readouterr()
    assert "GPU available" not in out + err and "Tip:" not in out + err, out + err
