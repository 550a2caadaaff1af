"""Tables: real CSV and Parquet files written here, classification and regression end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread
from mnist_mlp.train import train

from mlplab.data.table import TableDataModule
from mlplab.testing import compose_config, run_command

QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def houses(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A table like a user's: numbers, a categorical column, string labels, gaps."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 200, n)
    rooms = rng.integers(1, 6, n).astype(float)
    city = rng.choice(["Lyon", "Oslo", "Quito"], n)
    price = 3.0 * area + 20 * rooms + np.where(city == "Oslo", 150.0, 0.0) + rng.normal(0, 10, n)
    frame = pd.DataFrame({"area": area, "rooms": rooms, "city": city, "price": price})
    frame["band"] = np.where(price > np.median(price), "high", "low")
    frame.loc[[3, 7, 11], "area"] = np.nan  # gaps in a numeric feature ...
    frame.loc[[5, 9], "city"] = None  # ... and in a categorical one
    return frame


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "houses.csv"
    houses().to_csv(path, index=False)
    return path


def module(path, **kwargs) -> TableDataModule:
    dm = TableDataModule(path=str(path), **kwargs)
    dm.setup("fit")
    return dm


def test_classification_table_from_csv(csv_file, caplog, capsys):
    dm = module(csv_file, target="band", features=["area", "rooms", "city"])
    assert "data.task: classification (target 'band' is not numeric" in capsys.readouterr().out
    assert dm.task == "classification" and dm.class_names == ["high", "low"]  # sorted labels
    assert dm.num_outputs == 2 and dm.input_shape == (2 + 3,)  # 2 numeric + 3 one-hot cities
    assert {k: len(y) for k, (_, y) in dm.splits.items()} == {"train": 210, "val": 45, "test": 45}
    assert "missing numeric values" in caplog.text and "with the training medians" in caplog.text
    # Standardized with training statistics only: mean 0, std 1 on the training split.
    x_train = dm.splits["train"][0]
    assert x_train[:, :2].mean(0).abs().max() < 1e-5
    assert (x_train[:, :2].std(0, correction=0) - 1).abs().max() < 1e-4
    assert set(x_train[:, 2:].unique().tolist()) == {0.0, 1.0}  # one-hot
    assert torch.all(x_train[:, 2:].sum(1) == 1)


def test_preprocessing_is_fitted_on_the_training_split_only(tmp_path):
    frame = houses()
    frame["split"] = ["train"] * 200 + ["val"] * 50 + ["test"] * 50
    frame.loc[250:, "area"] += 1000  # a shifted test set must not move the scaling
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dm = module(path, target="price", split_column="split", features=["area", "rooms"])
    train_area = frame.loc[:199, "area"]
    assert dm.preprocessing["median"][0] == pytest.approx(train_area.median())
    filled = train_area.fillna(train_area.median())
    assert dm.preprocessing["mean"][0] == pytest.approx(filled.mean())
    assert float(dm.splits["test"][0][:, 0].mean()) > 10  # far out, as it should be


def test_parquet_regression_table_with_an_unseen_category(tmp_path, caplog):
    frame = houses()
    frame["split"] = "train"
    frame.loc[240:269, "split"], frame.loc[270:, "split"] = "val", "test"
    frame.loc[[280, 281], "city"] = "Lima"  # never seen in training
    frame.loc[[20], "price"] = np.nan  # a row without a target
    path = tmp_path / "houses.parquet"
    frame.drop(columns="band").to_parquet(path)
    dm = module(path, target="price", split_column="split")
    assert dm.task == "regression" and dm.num_outputs == 1 and dm.class_names is None
    assert "dropped 1 rows without a target value" in caplog.text
    assert "not seen in training" in caplog.text and "Lima" in caplog.text
    x_test = dm.splits["test"][0]
    assert (x_test[:, -3:].sum(1) == 0).sum() == 2  # Lima: all zeros
    assert dm.splits["train"][1].dtype == torch.float32
    assert dm.baseline()["train"] == pytest.approx(0.0, abs=1e-9)  # the mean's R² on train


def test_state_travels_so_other_rows_get_the_training_transform(csv_file, tmp_path):
    trained = module(csv_file, target="band")
    other = houses(n=60, seed=1)
    other_path = tmp_path / "new.csv"
    other.to_csv(other_path, index=False)
    fresh = TableDataModule(path=str(other_path), target="band")
    fresh.load_state_dict(trained.state_dict())
    fresh.setup()
    assert fresh.preprocessing == trained.preprocessing  # not refitted on the new rows


def test_missing_error_refuses_gaps(csv_file):
    with pytest.raises(Exception, match="missing numeric values in the train split and "):
        module(csv_file, target="band", missing="error")


def test_regression_end_to_end_through_the_cli(tmp_path):
    frame = houses().drop(columns="band")
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    result = run_command(
        "train.py",
        "experiment=tabular_regression",
        "data=table",
        f"data.path={path}",
        "data.target=price",
        "trainer.max_epochs=40",
        *QUIET,
        f"hydra.run.dir={run_dir}",
        env={"HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/r2"] > 0.8  # an almost linear target
    assert metrics["baseline/test_r2"] < 0.05 and metrics["margin_r2"] > 0.75
    # In the target's units: the noise is 10, prices are in the hundreds.
    assert 3 < metrics["test/mae"] < 60 and metrics["test/rmse"] >= metrics["test/mae"]
    assert "test R² " in result.stdout and "predicting the training mean" in result.stdout
    for name in ("predicted_vs_true.png", "residuals.png", "curves.png"):
        image = imread(run_dir / name)
        assert image[..., :3].std() > 0.05  # drawn, not blank
    assert not (run_dir / "confusion_matrix.png").exists()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "baseline/test_r2" in header and "baseline/test_acc" not in header
    report = (run_dir / "report.md").read_text()
    assert "predicted_vs_true.png" in report and "predicting the training mean" in report
    # eval.py rebuilds the regressor and the table's preprocessing from the checkpoint.
    eval_dir = tmp_path / "eval"
    evaluated = run_command("eval.py", f"ckpt_path={run_dir}", f"hydra.run.dir={eval_dir}")
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads((eval_dir / "metrics.json").read_text())
    assert again["test/r2"] == pytest.approx(metrics["test/r2"], abs=1e-5)


def test_bundled_tables_train(tmp_path):
    metrics = train(
        compose_config(
            [*QUIET, "experiment=tabular_classification", "trainer.max_epochs=5"], tmp_path
        )
    )
    assert metrics["split_sizes"] == {"train": 124, "val": 27, "test": 27}
    assert {"test/acc", "test/f1", "test/auroc", "test/error"} <= set(metrics)
    regression = train(
        compose_config(
            [*QUIET, "experiment=tabular_regression", "trainer.max_epochs=5"], tmp_path / "r"
        )
    )
    assert {"test/r2", "test/mae", "test/rmse"} <= set(regression) and "doctor" in regression


def test_cnn_trains_on_images(tmp_path):  # on tables it is refused: see test_bad_inputs
    metrics = train(
        compose_config(
            [*QUIET, "model=cnn", "optimizer=adam", "optimizer.lr=0.001", "trainer.max_epochs=2"],
            tmp_path,
        )
    )
    assert metrics["test/acc"] > 0.3 and metrics["num_params"] > 100_000


def houses_csv(path: Path) -> Path:
    """A regression table like the README's houses.csv: numeric and categorical features."""
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "sqm": rng.uniform(30, 200, n),
            "rooms": rng.integers(1, 7, n),
            "city": rng.choice(["north", "south"], n),
        }
    )
    frame["price"] = frame.sqm * 3000 + frame.rooms * 1e4 + rng.normal(0, 2e4, n)
    frame.to_csv(path, index=False)
    return path


def test_the_readme_table_example_runs_as_written(tmp_path):
    """`python train.py data=table data.path=houses.csv data.target=price`: the task picks
    the regressor, MSE and the regression metrics; no module= or loss= needed."""
    houses = houses_csv(tmp_path / "houses.csv")
    run_dir = tmp_path / "run"
    proc = run_command(
        "train.py",
        "data=table",
        f"data.path={houses}",
        "data.target=price",
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "regression: module=regressor, loss=mse, metrics=regression" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/r2", "test/mae", "test/rmse"} <= set(metrics)


def test_an_explicit_choice_that_contradicts_the_task_is_refused(tmp_path):
    houses = houses_csv(tmp_path / "houses.csv")
    proc = run_command(
        "train.py",
        "data=table",
        f"data.path={houses}",
        "data.target=price",
        "debug=smoke",
        "loss=cross_entropy",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2
    assert "need them: use loss=mse" in proc.stderr.strip().splitlines()[-1]


def test_eval_scores_every_row_of_another_table_in_any_order(tmp_path):
    houses = houses_csv(tmp_path / "houses.csv")
    run_dir = tmp_path / "run"
    trained = run_command(
        "train.py",
        "data=table",
        f"data.path={houses}",
        "data.target=price",
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(houses).sample(frac=1.0, random_state=1).to_csv(shuffled, index=False)
    scores = []
    for i, table in enumerate((houses, shuffled)):
        out = tmp_path / f"eval{i}"
        proc = run_command(
            "eval.py",
            f"ckpt_path={run_dir}",
            "data=table",
            f"data.path={table}",
            "data.target=price",
            f"hydra.run.dir={out}",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["split_sizes"] == {"test": 300} and metrics["test_examples"] == 300
        assert "baseline/test_r2" in metrics  # from the training targets' stored mean
        scores.append(metrics["test/r2"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)  # every row, whatever their order


def test_numbers_with_thousands_separators_are_numbers_not_an_id(tmp_path):
    """A spreadsheet's export ("1,234.5", quoted) is a numeric column, not text that is
    different in every row (an ID column)."""
    from mlplab.data.table import read_table

    path = tmp_path / "incomes.csv"
    rows = "".join(f'"{1000 + i * 1371:,}.5",{i % 7},{"pq"[i > 40]}\n' for i in range(80))
    path.write_text("income,age,label\n" + rows)
    table = read_table(path)
    assert table["income"].dtype.kind == "f" and table["income"][1] == 2371.5
    result = run_command(
        "train.py",
        "debug=smoke",
        "data=table",
        f"data.path={path}",
        "data.target=label",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "income" in checkpoint["TableDataModule"]["preprocessing"]["numeric"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("rows", "300 rows then, 312 now"),
        ("columns", "columns added: ['floor'], gone: none"),
        ("values", "the same rows and columns, other values"),
    ],
)
def test_a_resume_on_a_table_that_changed_since_is_refused(tmp_path, change, said):
    from mlplab.errors import DataError

    path = tmp_path / "houses.csv"
    houses().to_csv(path, index=False)
    table = ["data=table", f"data.path={path}", "data.target=band", *QUIET]
    train(compose_config([*table, "trainer.max_epochs=1"], tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    again = compose_config([f"ckpt_path={last}", "trainer.max_epochs=2"], tmp_path / "x")
    changed = houses()
    if change == "rows":
        changed = pd.concat([changed, houses(n=12, seed=1)])
    elif change == "columns":
        changed["floor"] = 1
    else:
        changed.loc[0, "city"] = "Rome"  # a category the checkpoint never saw
    changed.to_csv(path, index=False)
    with pytest.raises(DataError, match="changed since the checkpoint was written") as refused:
        train(again)
    assert f"written ({said})" in str(refused.value)
    houses().to_csv(path, index=False)  # the table it started with: the run continues
    assert train(again)["epochs_trained"] == 2
