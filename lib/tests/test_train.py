"""``train(cfg)`` end to end with the real Trainer on the bundled digits, and ``evaluate``."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from mnist_mlp.module import Classifier
from mnist_mlp.train import train
from omegaconf import OmegaConf, open_dict

from mlplab.errors import DivergenceError
from mlplab.evaluate import evaluate
from mlplab.report import confusion_matrix, tile_images
from mlplab.stored import load_run_config
from mlplab.testing import build, compose_config, run_command
from mlplab.testing.wandb_records import artifacts, summary_and_config

QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def fast_config(tmp_path, *overrides: str):
    return compose_config(
        [*QUIET, "logger=csv", "optimizer=momentum", "trainer.max_epochs=8", *overrides], tmp_path
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run on the offline default data, shared by the tests that read its results."""
    out = tmp_path_factory.mktemp("run")
    metrics = train(fast_config(out))
    return out, metrics


def test_short_run_beats_the_majority_baseline_by_a_wide_margin(trained):
    _, metrics = trained
    assert metrics["baseline/test_acc"] < 0.15
    assert metrics["test/acc"] > 0.85
    assert metrics["margin_points"] > 70
    assert metrics["split_sizes"] == {"train": 3500, "val": 500, "test": 1000}


def test_metrics_json_holds_the_returned_metrics_and_the_epoch_log(trained):
    out, metrics = trained
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert [row["epoch"] for row in saved["history"]] == list(range(1, 9))
    first, last = saved["history"][0], saved["history"][-1]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr"} <= set(first)
    assert last["train/loss"] < first["train/loss"]
    assert saved["best_epoch"] == min(saved["history"], key=lambda r: r["val/loss"])["epoch"]
    assert saved["num_params"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


def test_checkpoint_carries_the_resolved_config(trained):
    _, metrics = trained
    cfg = load_run_config(metrics["best_checkpoint"])
    assert cfg.model.hidden_sizes == [256, 128]
    assert cfg.optimizer.weight_decay == pytest.approx(1e-4)  # resolved, no interpolations left


def test_evaluate_reproduces_the_test_metrics_of_the_best_checkpoint(trained, tmp_path):
    _, metrics = trained
    eval_cfg = compose_config(
        [f"ckpt_path={metrics['best_checkpoint']}"], tmp_path, config_name="eval"
    )
    result = evaluate(eval_cfg)
    assert result["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert result["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert (tmp_path / "metrics.json").exists()


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    runs = [
        train(fast_config(tmp_path / name, "trainer.max_epochs=2", f"seed={seed}"))
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]

    def metrics_only(run):  # epoch_s is wall time, the one thing allowed to differ
        return [{k: v for k, v in row.items() if k != "epoch_s"} for row in run["history"]]

    assert metrics_only(runs[0]) == metrics_only(runs[1])
    assert (
        runs[0]["test/acc"] == runs[1]["test/acc"] and runs[0]["test/loss"] == runs[1]["test/loss"]
    )
    assert runs[0]["test/loss"] != runs[2]["test/loss"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=mse"],
        ["loss=mae"],
        ["optimizer=momentum"],
        ["optimizer=adagrad"],
        ["optimizer=adam"],
        ["optimizer=adamw"],
        ["scheduler=step"],
        ["scheduler=exponential"],
        ["scheduler=cosine"],
        ["scheduler=plateau"],
        ["regularization=l1"],
        ["regularization=none"],
        ["callbacks=none"],
        ["model.activation=sigmoid", "model.init=xavier"],
        ["model.activation=tanh", "model.init=default"],
        ["augment=shift"],
        ["trainer.precision=bf16-mixed"],
    ],
    ids=lambda o: ",".join(o),
)
def test_every_option_trains(overrides, tmp_path):
    metrics = train(compose_config(["debug=smoke", "trainer.max_epochs=2", *overrides], tmp_path))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert metrics["epochs_trained"] == 2


@pytest.mark.slow
def test_compiled_model_trains_to_the_same_kind_of_checkpoint(tmp_path):
    # torch.compile needs a C++ compiler on CPU and ~30 s to compile: slow.
    metrics = train(compose_config(["debug=smoke", "model.compile=true"], tmp_path))
    assert metrics["test/acc"] > 0.1
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.layers.0.weight" in state  # same names as an uncompiled run's


def test_scheduler_really_decays_the_learning_rate(tmp_path):
    cfg = fast_config(
        tmp_path,
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=0.5",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
    )
    lrs = [row["lr"] for row in train(cfg)["history"]]
    assert lrs == pytest.approx([0.01, 0.005, 0.0025])  # the rate each epoch trained with


def test_l1_penalty_is_added_and_logged(tmp_path):
    cfg = fast_config(tmp_path, "regularization=l1", "trainer.max_epochs=1")
    history = train(cfg)["history"]
    assert history[0]["train/l1_penalty"] > 0


@pytest.mark.parametrize("doctor", ["on", "off"])
def test_diverging_run_stops_with_one_clear_error(doctor, tmp_path):
    # One check (the module's), one message, with or without the doctor.
    message = r"loss became nan at step 3 of epoch 1; .* the run diverged; lower optimizer\.lr"
    overrides = ["debug=smoke", "optimizer.lr=1e12"]
    cfg = compose_config(
        [*overrides, *(["callbacks.doctor=null"] if doctor == "off" else [])], tmp_path
    )
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 20
    with pytest.raises(DivergenceError, match=message):
        train(cfg)


def test_disabling_the_progress_bar_in_the_trainer_drops_the_configured_bar(tmp_path):
    cfg = compose_config(
        [
            "logger=csv",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "trainer.limit_train_batches=2",
        ],
        tmp_path,
    )
    assert cfg.callbacks.progress_bar is not None
    assert train(cfg)["epochs_trained"] == 1


@pytest.mark.parametrize("name", ["curves.png", "confusion_matrix.png", "misclassified.png"])
def test_report_pictures_are_real_images_with_content(trained, name):
    out, _ = trained
    image = imread(out / name)
    height, width = image.shape[:2]
    assert height >= 300 and width >= 500
    gray = image[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # not a blank canvas
    assert (gray < 0.5).mean() > 0.005  # something dark was drawn: lines, cells, digits


def test_report_md_names_the_best_epoch_and_the_baseline_margin(trained):
    out, metrics = trained
    report = (out / "report.md").read_text()
    assert metrics["tested_epoch"] == metrics["best_epoch"]  # the checkpoint of the best epoch
    assert f"tested the weights of epoch {metrics['tested_epoch']}" in report
    assert "- data: `mnist_5k` (train 3,500, val 500, test 1,000)" in report
    assert f"beats it by **{metrics['margin_points']:.2f} points**" in report
    for picture in ("curves.png", "confusion_matrix.png", "misclassified.png"):
        assert f"]({picture})" in report
    assert report.count("\n| ") == 1 + metrics["epochs_trained"]  # header + one row per epoch


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 2, 0])
    matrix = confusion_matrix(labels, preds, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_misclassified_tiles_sit_in_their_cells_under_a_caption_strip():
    images = np.arange(1, 8, dtype=np.float32)[:, None, None] * np.ones((7, 2, 3), np.float32)
    grid = tile_images(images, cols=3, gap=1, caption=2, fill=0.0)
    assert grid.shape == (3 * (2 + 2 + 1) - 1, 3 * (3 + 1) - 1)
    for k in range(7):
        top, left = (k // 3) * 5 + 2, (k % 3) * 4
        assert (grid[top : top + 2, left : left + 3] == k + 1).all()
    assert (grid != 0).sum() == 7 * 2 * 3  # the rest (captions, gaps, empty cells) is fill


def test_wandb_run_holds_summary_images_and_nested_config(tmp_path):
    cfg = fast_config(tmp_path, "logger=wandb", "trainer.max_epochs=2")
    metrics = train(cfg)
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    summary, config = summary_and_config(log)
    assert summary["test/acc"] == pytest.approx(metrics["test/acc"])
    assert summary["best/val_acc"] == pytest.approx(metrics["val/acc_best"])
    assert summary["best/epoch"] == metrics["best_epoch"] and summary["stop_epoch"] == 2
    assert summary["baseline/test_acc"] == pytest.approx(metrics["baseline/test_acc"])
    assert summary["num_params"] == 235146 and summary["wall_s"] > 0
    for picture in ("report/curves", "report/confusion_matrix", "report/misclassified"):
        assert summary[f"{picture}/_type"] == "images/separated"
        (filename,) = summary[f"{picture}/filenames"]
        assert (log.parent / "files" / filename).stat().st_size > 10_000  # the PNG, kept to sync
    assert config["optimizer"]["lr"] == 0.01 and config["model"]["hidden_sizes"] == [256, 128]
    assert summary["_exit_code"] == 0
    # The tested checkpoint as the run's model artifact (callbacks.wandb_summary.log_model)
    (model,) = artifacts(log)
    best = tmp_path / "checkpoints" / "best.ckpt"
    assert metrics["best_checkpoint"] == str(best)
    digest = base64.b64encode(hashlib.md5(best.read_bytes()).digest()).decode()
    assert model["name"] == f"model-{log.stem.removeprefix('run-')}" and model["type"] == "model"
    assert sorted(model["aliases"]) == ["best", "latest"]  # W&B adds latest itself
    assert model["files"] == {"best.ckpt": (best.stat().st_size, digest)}
    assert model["metadata"]["test/acc"] == pytest.approx(metrics["test/acc"])


def test_a_run_that_raises_still_finishes_its_wandb_run(tmp_path):
    cfg = compose_config(["debug=smoke", "logger=wandb", "optimizer.lr=1e12"], tmp_path)
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 20
    with pytest.raises(DivergenceError):
        train(cfg)
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    summary, _ = summary_and_config(log)
    assert summary["_exit_code"] == 1


def test_secrets_are_redacted_by_whole_key_name_in_every_file(tmp_path, monkeypatch):
    secret, from_env = "sk-very-secret-123", "env-secret-456"
    monkeypatch.setenv("MLPLAB_TEST_TOKEN", from_env)
    notes = {
        "api_key": secret,
        "wandb_token": secret,
        "hf_token": "${oc.env:MLPLAB_TEST_TOKEN}",  # where a secret should come from
        "num_keypoints": 17,
        "max_tokens": 512,
        "monkey_images": "zoo",
    }
    overrides = [f"+notes.{k}={v}" for k, v in notes.items()]
    metrics = train(fast_config(tmp_path, "trainer.max_epochs=1", "logger=wandb", *overrides))
    stored = load_run_config(metrics["best_checkpoint"]).notes
    assert (stored.num_keypoints, stored.max_tokens, stored.monkey_images) == (17, 512, "zoo")
    assert stored.api_key == stored.wandb_token == "***"
    # Stored as the interpolation, so a resumed run reads the environment again.
    assert OmegaConf.to_container(stored)["hf_token"] == "${oc.env:MLPLAB_TEST_TOKEN}"
    assert stored.hf_token == from_env
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    for path in files:
        content = path.read_bytes()
        assert secret.encode() not in content and from_env.encode() not in content, path
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    _, config = summary_and_config(log)
    assert config["notes"]["max_tokens"] == 512 and config["notes"]["api_key"] == "***"


def test_resuming_continues_the_same_wandb_run(tmp_path):
    first = train(fast_config(tmp_path / "run", "logger=wandb", "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    # A finished run continues when its limit is raised (trainer.max_epochs=2).
    extend = ["trainer.max_epochs=2"]
    resumed = train(compose_config([f"ckpt_path={last}", *extend], tmp_path / "ignored"))
    assert resumed["history"][0] == first["history"][0] and resumed["epochs_trained"] == 2
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # the original and the resumed session...
    # ...of one W&B run id, read from each session's own log file (run-<id>.wandb): the folder
    # name gets a suffix when both sessions start in the same second.
    ids = {log.stem.removeprefix("run-") for run in runs for log in run.glob("run-*.wandb")}
    assert len(ids) == 1


def test_ckpt_path_last_resumes_the_newest_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = train(fast_config(tmp_path / "outputs" / "a", "trainer.max_epochs=1"))
    newer = train(fast_config(tmp_path / "outputs" / "b", "trainer.max_epochs=1", "seed=3"))
    extend = ["trainer.max_epochs=2"]
    resumed = train(compose_config(["ckpt_path=last", *extend], tmp_path / "ignored"))
    assert resumed["best_checkpoint"].startswith(str(tmp_path / "outputs" / "b"))
    assert resumed["history"][0] == newer["history"][0]
    assert resumed["history"][0] != older["history"][0]


def test_early_stopping_facts_are_right_in_every_output(tmp_path, capsys):
    cfg = fast_config(
        tmp_path,
        "logger=wandb",
        "optimizer=adam",
        "optimizer.lr=0.003",
        "callbacks.early_stopping.patience=1",
        "trainer.max_epochs=30",
    )
    metrics = train(cfg)
    history = metrics["history"]
    # Stopped before the budget, after `patience` epochs without a better val loss.
    assert metrics["stopped_early"] is True
    assert metrics["stopped_epoch"] == metrics["epochs_trained"] == len(history) < 30
    best = min(history, key=lambda r: r["val/loss"])["epoch"]
    assert metrics["best_epoch"] == metrics["tested_epoch"] == best == len(history) - 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (saved["stopped_early"], saved["stopped_epoch"], saved["tested_epoch"]) == (
        True,
        len(history),
        best,
    )
    report = (tmp_path / "report.md").read_text()
    assert f"early stopping ended training after epoch {len(history)}" in report
    assert f"| {best} **(tested)** |" in report
    printed = capsys.readouterr().out
    assert (
        f"tested the weights of epoch {best}; early stopping ended training after epoch" in printed
    )
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    summary, _ = summary_and_config(log)
    assert summary["stopped_early"] is True and summary["tested_epoch"] == best
    assert summary["stop_epoch"] == len(history)


def test_load_from_checkpoint_returns_the_trained_model(trained, tmp_path):
    # What every Lightning user tries first; with weights_only=True, so no code is unpickled.
    _, metrics = trained
    module = Classifier.load_from_checkpoint(
        metrics["best_checkpoint"], map_location="cpu", weights_only=True
    )
    assert module.hparams.input_shape == (1, 28, 28) and module.hparams.num_outputs == 10
    datamodule, _ = build(fast_config(tmp_path))
    x, y = datamodule.splits["test"]
    module.eval()
    with torch.no_grad():
        accuracy = float((module(x).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_logger_none_drops_the_callbacks_that_need_a_logger_with_one_line(tmp_path):
    """README's logger=none runs: the learning-rate monitor (it writes only to a logger)
    is dropped, as enable_progress_bar=false drops the bar, and said once."""
    result = run_command(
        "train.py",
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dropped = [line for line in result.stdout.splitlines() if "dropped" in line]
    assert dropped == ["LearningRateMonitor dropped: it writes to a logger; this run has none"]
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "csv").exists()


def test_the_config_saved_is_the_config_that_ran(tmp_path):
    # A regression table's task picks the regressor, MSE and regression metrics after the data
    # is read: .hydra/config.yaml, the checkpoint and metrics.json all show that config.
    run = tmp_path / "run"
    done = run_command(
        "train.py", "data=diabetes", "trainer.max_epochs=1", *QUIET, "logger=none",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    stored = load_run_config(run / "checkpoints" / "last.ckpt")
    for key in ("module._target_", "loss._target_", "metrics"):
        assert OmegaConf.select(saved, key) == OmegaConf.select(stored, key), key
    assert saved.module._target_ == "mnist_mlp.module.Regressor"
    assert set(saved.metrics) == {"mae", "rmse", "r2"}
    assert "test/r2" in json.loads((run / "metrics.json").read_text())


def test_a_resumed_regression_keeps_the_loss_it_chose(tmp_path):
    # The stored config is the one that ran: a resumed run's command line names no group, and
    # the task's defaults are not applied over the stored choices again.
    run = tmp_path / "run"
    first = ["data=diabetes", "loss=huber", "trainer.max_epochs=1", *QUIET, "logger=none"]
    done = run_command("train.py", *first, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    done = run_command("train.py", f"ckpt_path={run}", "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr
    stored = load_run_config(run / "checkpoints" / "last.ckpt")
    assert stored.loss._target_ == "mnist_mlp.losses.Huber"
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 2
