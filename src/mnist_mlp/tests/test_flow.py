"""The project's training flow (``train.train``) with the real Trainer, on the project's
default data: it builds the network and the module for the data, fits, and tests the best
checkpoint. ``train.py`` does the same from the command line, into the default trackers."""

from __future__ import annotations

import json

from mlplab.testing import QUIET_RUN, compose_config, run_command

from ..model import MLP
from ..module import Classifier
from ..train import train


def test_the_flow_trains_on_the_default_data_and_beats_the_baseline(tmp_path):
    cfg = compose_config([*QUIET_RUN, "trainer.max_epochs=5", "optimizer=momentum"], tmp_path)
    metrics = train(cfg)
    assert metrics["test/acc"] > metrics["baseline/test_acc"] + 0.2
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]
    best = Classifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert isinstance(best.net, MLP)
    assert metrics["num_params"] == sum(p.numel() for p in best.net.parameters())


def test_train_py_records_the_run_in_every_default_tracker(tmp_path):
    trackers = set(compose_config([], tmp_path).logger)
    run, store = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_command(
        "train.py",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run}",
        env={"MLFLOW_TRACKING_URI": store},
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"test accuracy {100 * metrics['test/acc']:.2f}%" in done.stdout
    assert trackers <= {"csv", "wandb", "mlflow"}, f"add a check for {trackers}"
    if "csv" in trackers:
        (table,) = run.glob("csv/**/metrics.csv")
        assert "val/acc" in table.read_text().splitlines()[0]
    if "wandb" in trackers:  # offline in tests: the run waits in the run dir for `wandb sync`
        assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    if "mlflow" in trackers:
        import mlflow

        (finished,) = mlflow.MlflowClient(store).search_runs(
            [e.experiment_id for e in mlflow.MlflowClient(store).search_experiments()]
        )
        assert finished.info.status == "FINISHED"
        assert finished.data.metrics["test/acc"] == metrics["test/acc"]
