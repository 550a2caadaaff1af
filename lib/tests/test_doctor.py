"""The training doctor: each demo experiment triggers its diagnosis; a healthy run raises none."""

from __future__ import annotations

import json
import math

import pytest
from mnist_mlp.train import train

from mlplab.callbacks import EpochHistory
from mlplab.doctor import TrainingDoctor
from mlplab.testing import bare_trainer, build, compose_config
from mlplab.testing.wandb_records import summary_and_config

QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run(tmp_path, *overrides: str) -> dict:
    return train(compose_config([*QUIET, "logger=csv", *overrides], tmp_path))


def checks(metrics: dict) -> set[str]:
    return {f["check"] for f in metrics["doctor"]}


# Each demo and the diagnoses it must raise (run on the bundled digits, seconds each).
DEMOS = {
    "lr_too_high": {"loss_spike", "exploding_gradients", "chance_level"},
    "lr_too_low": {"plateau", "chance_level"},
    "shuffled_labels": {"chance_level"},
    "deep_sigmoid": {"vanishing_gradients"},
    "overfit_small_data": {"overfitting"},
}


@pytest.mark.parametrize("demo", sorted(DEMOS))
def test_each_demo_triggers_its_diagnosis(demo, tmp_path, capsys):
    metrics = run(tmp_path, f"experiment={demo}")
    assert DEMOS[demo] <= checks(metrics)
    # A healthy run's alarms would be noise: none of the demos raises an unrelated one.
    assert "initial_loss" not in checks(metrics)
    # Console, metrics.json and report.md all carry the findings with their numbers.
    printed = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())["doctor"]
    assert on_disk == metrics["doctor"]
    for finding in metrics["doctor"]:
        assert f"[{finding['check']}]" in printed and finding["message"] in printed
        assert f"**{finding['check']}**" in report and finding["fixes"] in report
        assert any(ch.isdigit() for ch in finding["message"])


def test_overfitting_names_the_epoch_that_early_stopping_keeps(tmp_path):
    metrics = run(tmp_path, "experiment=overfit_small_data")
    (finding,) = [f for f in metrics["doctor"] if f["check"] == "overfitting"]
    history = metrics["history"]
    best = min(history, key=lambda r: r["val/loss"])
    assert finding["epoch"] == best["epoch"] < history[-1]["epoch"] - 3
    assert f"would keep epoch {best['epoch']}" in finding["message"]
    assert finding["values"]["val_loss_last"] > 1.1 * finding["values"]["val_loss_min"]


def test_vanishing_gradients_report_the_per_layer_norms(tmp_path):
    metrics = run(tmp_path, "experiment=deep_sigmoid")
    (finding,) = [f for f in metrics["doctor"] if f["check"] == "vanishing_gradients"]
    assert finding["values"]["ratio_first_to_last"] < 1e-3
    assert finding["message"].count("e-") >= 7  # one norm per layer: 6 hidden + output
    # The same norms go to the loggers every epoch.
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert {f"grad_norm/layer{i}" for i in range(1, 8)} <= set(header.split(","))


def test_thresholds_are_config_values(tmp_path):
    metrics = run(tmp_path, "experiment=overfit_small_data", "+callbacks.doctor.overfit_rise=5.0")
    assert "overfitting" not in checks(metrics)


def test_a_healthy_run_raises_no_alarm(tmp_path, capsys):
    metrics = run(tmp_path, "optimizer=momentum", "trainer.max_epochs=10")
    assert metrics["doctor"] == [] and metrics["test/acc"] > 0.9
    assert "training doctor: no findings" in capsys.readouterr().out
    assert "## Training doctor\n\nNo problem found." in (tmp_path / "report.md").read_text()


def test_unscaled_inputs_are_caught_by_the_first_loss(tmp_path):
    # The classic bug: pixels fed as 0-255 instead of [0, 1]. A real Trainer on the real module.
    cfg = compose_config([*QUIET, "logger=none", "callbacks.lr_monitor=null"], tmp_path)
    datamodule, model = build(cfg)
    for split, (x, y) in datamodule.splits.items():
        datamodule.splits[split] = (x * 255, y)
    doctor = TrainingDoctor()
    trainer = bare_trainer(tmp_path, [doctor, EpochHistory()], limit_train_batches=3)
    trainer.fit(model, datamodule=datamodule)
    (finding,) = [f for f in doctor.findings if f.check == "initial_loss"]
    assert finding.values["initial_loss"] > 10 * finding.values["uniform_loss"]
    assert finding.values["uniform_loss"] == pytest.approx(math.log(10), rel=1e-5)
    assert "inputs not scaled" in finding.causes


def test_findings_reach_the_wandb_summary(tmp_path):
    metrics = run(tmp_path, "experiment=lr_too_low", "logger=wandb", "trainer.max_epochs=4")
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    summary, _ = summary_and_config(log)
    assert summary["doctor/findings"] == len(metrics["doctor"]) >= 1
    for finding in metrics["doctor"]:
        assert summary[f"doctor/{finding['check']}"] == finding["message"]


def test_a_batch_as_large_as_the_training_set_is_named_not_the_learning_rate(tmp_path, caplog):
    metrics = run(tmp_path, "data.batch_size=100000", "trainer.max_epochs=4")
    assert checks(metrics) == {"one_step_per_epoch"}  # no plateau or chance blamed on the lr
    assert "each epoch is a single optimizer step" in caplog.text  # warned when loading


def test_small_tables_at_default_settings_raise_no_false_alarm(tmp_path):
    """Wine (3 classes: ln 3 = 1.1, which a fresh net's random logits exceed by ~0.6) and
    breast cancer (an epoch's last batch of 15 rows, twice as noisy as a full one of 64)
    train well; the doctor says nothing of their first loss or of spikes."""
    from sklearn.datasets import load_breast_cancer

    wine = run(tmp_path / "wine", "data=wine")
    assert wine["test/acc"] > 0.9
    assert "initial_loss" not in checks(wine)
    table = tmp_path / "breast_cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(table, index=False)
    cancer = run(tmp_path / "cancer", "data=table", f"data.path={table}")
    assert cancer["test/acc"] > 0.9
    assert checks(cancer) & {"loss_spike", "initial_loss"} == set()


def test_a_partial_batch_needs_a_bigger_jump_to_count_as_a_spike():
    from mlplab.doctor import Thresholds, _spikes

    steps = [[0.16, 0.15, 0.17, 0.16, 0.15, 0.16, 0.35]]  # the last step: a noisy jump
    assert _spikes(steps, 0.69, Thresholds(), [[64] * 6 + [64]])  # a full batch: a spike
    assert not _spikes(steps, 0.69, Thresholds(), [[64] * 6 + [15]])  # 15 rows: noise
    assert _spikes([[0.16] * 6 + [27.0]], 0.69, Thresholds(), [[64] * 6 + [15]])  # divergence


def test_a_short_run_is_told_by_what_made_it_short(tmp_path):
    metrics = run(tmp_path, "trainer.limit_train_batches=3", "trainer.max_epochs=2")
    (short,) = [f for f in metrics["doctor"] if f["check"] == "too_few_steps"]
    assert short["causes"] == "trainer.limit_train_batches=3"


def test_advice_names_the_inputs_the_data_has_and_a_pruned_run_is_not_too_short():
    from mlplab.doctor import Thresholds, diagnose

    flat = [{"epoch": e, "train/loss": 2.3, "val/loss": 2.3, "val/acc": 0.1} for e in range(6)]
    for inputs in ("images", "rows"):
        found = diagnose(flat, Thresholds(), uniform_loss=2.3, steps_per_epoch=[50] * 6,
                         chance_acc=0.1, inputs=inputs)  # fmt: skip
        assert {f.check for f in found} == {"plateau", "chance_level"}
        advice = " ".join(f.fixes + f.causes for f in found)
        assert f"the targets match the {inputs}" in advice
        assert ("images" in advice) == (inputs == "images")
    pruned = diagnose(flat[:1], Thresholds(), steps_per_epoch=[5], short_cause=None)
    assert pruned == []
