"""The command-line entry points as a user runs them, real Hydra: each command in this
process (mlplab.testing.run_command), a real process where the process is what is tested
(what it imports)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mlplab.testing import real_data_dir, run_python
from mlplab.testing import run_command as run
from mlplab.testing.wandb_records import summary_and_config

QUIET = ["trainer.enable_progress_bar=false"]


def test_help_lists_the_groups_without_importing_torch():
    result = run_python("-X", "importtime", "train.py", "--help")
    assert result.returncode == 0
    for group in ("data:", "model:", "optimizer:", "experiment:", "debug:"):
        assert group in result.stdout
    imported = {
        line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time" in line
    }
    assert "torch" not in imported and "lightning" not in imported


def test_cfg_job_prints_the_composed_config_without_importing_torch():
    result = run_python("-X", "importtime", "train.py", "--cfg", "job", "experiment=lesson")
    assert result.returncode == 0
    assert "hidden_sizes:\n  - 256\n  - 128" in result.stdout
    imported = {
        line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time" in line
    }
    assert "torch" not in imported and "lightning" not in imported


def test_a_run_imports_none_of_the_plugins_it_does_not_choose(tmp_path):
    result = run_python(
        "-X", "importtime", "train.py", "debug=smoke", "logger=csv", "callbacks=none",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time" in line
    }
    assert "lightning" in imported  # what it measures: this run's imports
    plugins = {"wandb", "mlflow", "optuna", "submitit", "joblib", "onnxruntime", "tensorboard"}
    plugins |= {"mlplab.doctor", "mlplab.report", "mlplab.transfer"}
    assert imported & plugins == set()


def test_smoke_run_prints_accuracy_and_baseline_margin(tmp_path):
    result = run("train.py", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "the model beats it by" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    for name in ("report.md", "curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_eval_of_a_checkpoint_prints_the_same_test_metrics(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    assert run("train.py", "debug=smoke", f"hydra.run.dir={train_dir}").returncode == 0
    trained = json.loads((train_dir / "metrics.json").read_text())
    result = run(
        "eval.py",
        f"ckpt_path={trained['best_checkpoint']}",
        f"hydra.run.dir={eval_dir}",
        "hydra.job_logging.root.level=WARNING",
    )
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    # smoke tests 2 batches at train time; eval tests the whole test set, so compare the full set
    assert evaluated["baseline/test_acc"] == pytest.approx(trained["baseline/test_acc"])
    assert "test accuracy" in result.stdout


def test_eval_on_another_data_set_of_the_same_shape(tmp_path):
    fashion = real_data_dir("fashion_mnist")
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    assert run("train.py", "debug=smoke", f"hydra.run.dir={train_dir}").returncode == 0
    result = run(
        "eval.py",
        f"ckpt_path={train_dir}",  # a run dir: its best checkpoint
        "data=fashion_mnist",
        f"data.data_dir={fashion}",
        f"hydra.run.dir={eval_dir}",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["data"] == "fashion_mnist" and metrics["split_sizes"]["test"] == 10_000
    assert metrics["checkpoint"] == str(train_dir / "checkpoints" / "best.ckpt")
    report = (eval_dir / "report.md").read_text()
    assert "- data: `fashion_mnist` (train 50,000, val 10,000, test 10,000)" in report
    # It prints the files it wrote, and only those.
    (listed,) = [line for line in result.stdout.splitlines() if line.startswith("run dir:")]
    written = listed.split("(", 1)[1].rstrip(")").split(", ")
    assert written == ["metrics.json", "confusion_matrix.png", "misclassified.png", "report.md"]
    assert all((eval_dir / name).stat().st_size > 0 for name in written)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["regularization.dropout=1.5"],
            "error: regularization.dropout=1.5 is not allowed: must be a number in [0, 1)",
        ),
        (["data.batch_size=0"], "error: data.batch_size=0 is not allowed"),
        (
            [
                "data=mnist",
                "data.data_dir=/nonexistent/mnist",
                "data.mirrors=[http://127.0.0.1:9/]",
            ],
            "error: mnist not found in /nonexistent/mnist: expected train-images-idx3-ubyte.gz",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    # The empty mnist dir below stands for "no files and no network"; mirrors point nowhere.
    result = run("train.py", "debug=smoke", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("script", "given", "missing"),
    [("eval.py", [], "ckpt_path"), ("export.py", [], "ckpt_path"),
     ("predict.py", ["ckpt_path=outputs"], "input")],
)  # fmt: skip
def test_a_required_value_left_out_is_one_line_and_exit_2(script, given, missing, tmp_path):
    result = run(script, *given, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {missing} is required: ")
    assert "Traceback" not in result.stderr


def test_eval_of_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    result = run("eval.py", f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: checkpoint {tmp_path}/nope.ckpt does not exist"
    )


def test_multirun_gives_each_job_its_own_dir(tmp_path):
    result = run(
        "train.py", "-m", "debug=smoke", "optimizer=sgd,adam", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    targets = {
        (tmp_path / j / ".hydra" / "overrides.yaml").read_text().count("optimizer=adam")
        for j in jobs
    }
    assert targets == {0, 1}


def test_wandb_is_offline_when_not_logged_in_and_the_run_is_ready_to_sync(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_MODE": None, "WANDB_API_KEY": None}  # no netrc, no key
    result = run(
        "train.py",
        "debug=smoke",
        "logger=[wandb,csv]",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "W&B: not logged in, logging offline; upload later with: wandb sync" in result.stdout
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("run-*.wandb")  # the file `wandb sync` uploads
    summary, config = summary_and_config(log)
    assert 0 <= summary["test/acc"] <= 1 and summary["_exit_code"] == 0
    assert config["model"]["hidden_sizes"] == [256, 128]  # nested, not flattened strings
    assert summary["_name"] == "debug=smoke,logger=[wandb,csv],trainer.enable_progress_bar=false"
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()


@pytest.mark.slow
def test_lesson_experiment_on_full_mnist(tmp_path):
    """The lesson's full run: 30 epochs (or early stop) on 50k/10k/10k real MNIST."""
    data_dir = real_data_dir("mnist")
    result = run(
        "train.py",
        "experiment=lesson",
        f"data.data_dir={data_dir}",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        *QUIET,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 50000, "val": 10000, "test": 10000}
    assert metrics["test/acc"] > 0.94  # measured 95.6% (the lesson reports 92.8%)
    assert metrics["baseline/test_acc"] == pytest.approx(0.1135)  # '1' is MNIST's majority class
    assert metrics["doctor"] == []  # a healthy run raises no alarm
    assert "training doctor: no findings" in result.stdout


@pytest.mark.slow
def test_fashion_mnist_trains(tmp_path):
    data_dir = real_data_dir("fashion_mnist")
    result = run(
        "train.py",
        "data=fashion_mnist",
        f"data.data_dir={data_dir}",
        "logger=csv",
        "optimizer=adam",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path}",
        *QUIET,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.8 and metrics["baseline/test_acc"] == pytest.approx(0.1)


def test_a_secret_on_the_command_line_is_in_no_file_of_the_run_dir(tmp_path):
    secret = "SUPERSECRET123"
    result = run(
        "train.py",
        "debug=smoke",
        "logger=wandb",
        f"+notes.api_key={secret}",
        "+notes.max_tokens=512",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= names
    assert any(p.suffix == ".wandb" for p in files)  # W&B's log holds its command line too
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert "+notes.api_key=***" in overrides and "+notes.max_tokens=512" in overrides
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    summary, config = summary_and_config(log)
    assert config["notes"] == {"api_key": "***", "max_tokens": 512}
    assert "+notes.api_key=***" in summary["_name"]


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connecting is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["auto", "online"])
def test_a_wandb_key_without_network_falls_back_to_offline_or_fails_fast(mode, tmp_path):
    # A compute node: a key in the environment, no route to the W&B server.
    env = {
        "WANDB_API_KEY": "a" * 40,
        "WANDB_MODE": None,
        "WANDB_BASE_URL": f"http://127.0.0.1:{_closed_port()}",
    }
    started = time.monotonic()
    result = run(
        "train.py",
        "debug=smoke",
        "logger=wandb",
        f"logger.wandb.mode={mode}",
        f"hydra.run.dir={tmp_path}",
        env=env,
    )
    assert time.monotonic() - started < 60  # seconds, not W&B's 90 s retries
    if mode == "auto":
        assert result.returncode == 0, result.stderr
        assert "W&B: cannot reach 127.0.0.1:" in result.stdout
        assert "logging offline; upload later with: wandb sync " in result.stdout
        assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    else:
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: W&B: cannot reach 127.0.0.1:") and "mode=online" in last
        assert "Traceback" not in result.stderr
