"""The project's training flow (``mnist_mlp.train.train``) with the real Trainer: it builds the
configured network and module for the data, fits and tests the best checkpoint."""

from __future__ import annotations

import json

from mlplab.testing import QUIET_RUN, compose_config, run_python

from mnist_mlp.model import MLP
from mnist_mlp.module import Classifier, Regressor
from mnist_mlp.train import train


def test_the_flow_trains_the_lesson_network_and_beats_the_baseline(tmp_path):
    metrics = train(
        compose_config([*QUIET_RUN, "trainer.max_epochs=3", "optimizer=momentum"], tmp_path)
    )
    assert metrics["test/acc"] > metrics["baseline/test_acc"] + 0.5
    assert metrics["num_params"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]
    best = Classifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert isinstance(best.net, MLP) and best.net.input_shape == (1, 28, 28)


def test_a_regression_table_trains_the_regressor_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    done = run_python(
        "train.py", "data=diabetes", "trainer.max_epochs=2", *QUIET_RUN, f"hydra.run.dir={run}"
    )
    assert done.returncode == 0, done.stderr
    assert "regression: module=regressor, loss=mse, metrics=regression" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/mae", "test/rmse", "test/r2"} <= set(metrics)
    best = Regressor.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert best.hparams.num_outputs == 1
