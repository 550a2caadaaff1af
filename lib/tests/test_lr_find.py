"""``callbacks=lr_find``: Lightning's learning-rate range test, its suggestion recorded."""

from __future__ import annotations

import pytest
from mnist_mlp.train import train

from mlplab.testing import QUIET_RUN, comparable, compose_config

SHORT = [*QUIET_RUN, "trainer.max_epochs=2", "trainer.limit_train_batches=10"]


def test_the_suggestion_is_recorded_and_the_run_is_the_one_without_the_test(tmp_path):
    plain = train(compose_config(SHORT, tmp_path / "plain"))
    found = train(compose_config([*SHORT, "callbacks=lr_find"], tmp_path / "found"))
    suggestion = found.pop("lr_find/suggestion")
    assert isinstance(suggestion, float) and 1e-6 <= suggestion <= 1.0
    assert found.pop("lr_find/applied") is False
    # The range test restores the weights, the optimizer and the random state it started
    # from: the run is exactly the one without it.
    assert comparable(found) == comparable(plain)
    assert not list((tmp_path / "found").rglob(".lr_find_*"))  # its checkpoint is gone


def test_apply_trains_with_the_suggestion(tmp_path):
    metrics = train(
        compose_config([*SHORT, "callbacks=lr_find", "callbacks.lr_find.apply=true"], tmp_path)
    )
    assert metrics["lr_find/applied"] is True
    assert metrics["history"][0]["lr"] == metrics["lr_find/suggestion"]


def test_apply_with_a_scheduler_starts_its_decay_from_the_suggestion(tmp_path):
    overrides = [*SHORT, "callbacks=lr_find", "callbacks.lr_find.apply=true", "scheduler=step",
                 "scheduler.step_size=1", "scheduler.gamma=0.5"]  # fmt: skip
    metrics = train(compose_config(overrides, tmp_path))
    first, second = (row["lr"] for row in metrics["history"])
    assert first == metrics["lr_find/suggestion"]
    assert second == pytest.approx(first * 0.5)
