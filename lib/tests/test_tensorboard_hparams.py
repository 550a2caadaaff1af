"""TensorBoard's HParams tab gets each run's config with its final figures."""

from __future__ import annotations

import json

import pytest
from mnist_mlp.train import train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from mlplab.tensorboard_hparams import final_metrics
from mlplab.testing import compose_config


def test_the_hparams_tab_holds_the_config_and_the_runs_final_metrics(tmp_path):
    overrides = ["logger=tensorboard", "trainer.max_epochs=2", "trainer.limit_train_batches=5",
                 "trainer.enable_progress_bar=false", "optimizer.lr=0.05"]  # fmt: skip
    train(compose_config(overrides, tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    hparams = events.PluginTagToContent(metadata.PLUGIN_NAME)
    # The session (this run's config) and the experiment (the metrics it is compared by),
    # written once with the final figures: no placeholder hp_metric at the start.
    assert set(hparams) == {metadata.SESSION_START_INFO_TAG, metadata.EXPERIMENT_TAG,
                            metadata.SESSION_END_INFO_TAG}  # fmt: skip
    session = metadata.parse_session_start_info_plugin_data(
        hparams[metadata.SESSION_START_INFO_TAG]
    )
    assert session.hparams["optimizer/lr"].number_value == 0.05
    experiment = metadata.parse_experiment_plugin_data(hparams[metadata.EXPERIMENT_TAG])
    shown = {info.name.tag for info in experiment.metric_infos}
    assert {"test/acc", "val/acc_best", "baseline/test_acc", "epochs_trained"} <= shown
    assert "hp_metric" not in events.Tags()["scalars"]
    # Each metric's value is the run's, as metrics.json has it.
    for tag in ("test/acc", "val/acc_best", "epochs_trained"):
        assert events.Scalars(tag)[-1].value == pytest.approx(metrics[tag], rel=1e-6)


def test_only_finite_headline_numbers_are_final_metrics():
    record = {"test/acc": 0.9, "val/loss_best": 0.3, "val/acc": 0.8, "margin_points": 2,
              "test/f1": float("nan"), "stopped_early": True, "data": "wine",
              "epochs_trained": 4}  # fmt: skip
    assert final_metrics(record) == {
        "test/acc": 0.9, "val/loss_best": 0.3, "margin_points": 2.0, "epochs_trained": 4.0
    }  # fmt: skip
