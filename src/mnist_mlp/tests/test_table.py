"""Tables (``data=table``): your own CSV from the command line, and a regression table."""

from __future__ import annotations

import json

from mlplab.testing import QUIET_RUN, houses, run_command

from ..module import Classifier, Regressor


def test_your_own_csv_trains_from_the_command_line(tmp_path):
    houses().to_csv(tmp_path / "houses.csv", index=False)
    run = tmp_path / "run"
    done = run_command(
        "train.py",
        "data=table",
        f"data.path={tmp_path / 'houses.csv'}",
        "data.target=band",
        "data.features=[sqm,rooms,city]",
        "trainer.max_epochs=3",
        *QUIET_RUN,
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1
    best = Classifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert best.hparams.num_outputs == 2  # cheap, dear


def test_a_regression_table_trains_the_regressor_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    done = run_command(
        "train.py", "data=diabetes", "trainer.max_epochs=2", *QUIET_RUN, f"hydra.run.dir={run}"
    )
    assert done.returncode == 0, done.stderr
    assert "regression: module=regressor, loss=mse, metrics=regression" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/mae", "test/rmse", "test/r2"} <= set(metrics)
    best = Regressor.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert best.hparams.num_outputs == 1
