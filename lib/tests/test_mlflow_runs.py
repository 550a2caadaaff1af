"""``logger=mlflow``: real MLflow runs in a real local store, read back with MlflowClient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlplab
from mlplab.testing import PROJECT, run_command

mlflow = pytest.importorskip("mlflow")

SHORT = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def runs(uri: str, experiment: str = "mnist_mlp") -> list:  # the project's package
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A short run logged to W&B (offline), the CSV and MLflow together."""
    root = tmp_path_factory.mktemp("mlflow")
    (root / "store").mkdir()
    uri = store(root)
    run_dir = root / "run"
    result = run_command(
        "train.py",
        "logger=[wandb,csv,mlflow]",
        "+secret_notes.api_key=hunter2",
        "+secret_notes.secret_key=hunter3",
        "+secret_notes.aws_secret_access_key=hunter4",
        "+secret_notes.private_key=hunter5",
        *SHORT,
        f"hydra.run.dir={run_dir}",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir / "terminal.txt").write_text(result.stdout + result.stderr)  # what a user saw
    return uri, run_dir


def test_the_tested_model_is_an_mlflow_model_that_predicts_as_predict_py(tracked, monkeypatch):
    uri, run_dir = tracked
    (run,) = runs(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    signature = model.metadata.get_input_schema().to_dict()[0]
    assert list(signature["tensor-spec"]["shape"]) == [-1, 1, 28, 28]  # any batch size
    # Raw pixels in, as a client has them: the probabilities predict.py gives.
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    served = model.predict(pixels[:, None].astype(np.float32))
    expected = mlplab.predict(run_dir, pixels).filter(like="prob_").to_numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_an_onnx_export_is_logged_with_its_card_into_the_run_that_trained_it(
    tracked, tmp_path, monkeypatch
):
    uri, run_dir = tracked
    (run,) = runs(uri)
    export_dir = tmp_path / "export"
    done = run_command(
        "export.py", f"ckpt_path={run_dir}", "mlflow_run=trained", f"hydra.run.dir={export_dir}",
        env={"MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"logged to MLflow: runs:/{run.info.run_id}/onnx_model " in done.stdout
    client = mlflow.MlflowClient(uri)
    files = {
        a.path.removeprefix("onnx_model/")
        for a in client.list_artifacts(run.info.run_id, "onnx_model")
    }
    assert {"MLmodel", "model.onnx", "model.json", "README.md"} <= files
    card = client.download_artifacts(run.info.run_id, "onnx_model/README.md", str(tmp_path))
    assert Path(card).read_text() == (export_dir / "model" / "README.md").read_text()
    # Served by MLflow (onnxruntime), raw pixels in: the probabilities predict.py gives.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/onnx_model")
    pixels = np.random.default_rng(1).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    served = model.predict(pixels[:, None].astype(np.float32))
    served = next(iter(served.values())) if isinstance(served, dict) else np.asarray(served)
    expected = mlplab.predict(run_dir, pixels).filter(like="prob_").to_numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_run_holds_its_config_metrics_summary_and_files(tracked):
    uri, run_dir = tracked
    (run,) = runs(uri)
    client = mlflow.MlflowClient(uri)
    params = run.data.params
    assert params["optimizer/lr"] == "0.01" and params["model/hidden_sizes"] == "[256, 128]"
    assert params["secret_notes/api_key"] == "***"  # redacted, as for W&B
    for name in ("secret_key", "aws_secret_access_key", "private_key"):
        assert params[f"secret_notes/{name}"] == "***", name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # per epoch
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert run.data.metrics["best/val_acc"] == pytest.approx(metrics["val/acc_best"])
    files = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/metrics.json", "report/curves.png"} <= files
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]
    assert run.info.status == "FINISHED"
    assert (run_dir / "wandb").is_dir() and (run_dir / "csv" / "metrics.csv").is_file()


def test_mlflows_own_lines_go_to_the_log_file_not_the_terminal(tracked):
    _, run_dir = tracked
    terminal = (run_dir / "terminal.txt").read_text()
    assert "test accuracy" in terminal  # the run's own summary is there
    for line in terminal.splitlines():  # (the tmp folder's name holds "mlflow")
        assert " mlflow." not in line and "alembic" not in line and "Creating" not in line, line
    log = (run_dir / "train.log").read_text()
    assert "Experiment with name" in log and "[mlflow." in log


def test_a_resumed_run_continues_its_mlflow_run(tracked):
    uri, run_dir = tracked
    result = run_command(
        "train.py",
        f"ckpt_path={run_dir}",
        "trainer.max_epochs=3",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs(uri)  # still one run
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 3
    assert run.data.params["trainer/max_epochs"] == "2"  # as first logged ...
    assert run.data.tags["resumed/trainer/max_epochs"] == "3"  # ... and what the resume set


@pytest.mark.slow
def test_a_sweeps_jobs_are_runs_of_one_experiment_tagged_with_the_sweep(tmp_path):
    (tmp_path / "store").mkdir()
    uri = store(tmp_path)
    result = run_command(
        "train.py",
        "-m",
        "logger=mlflow",
        "seed=1,2",
        *SHORT,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = runs(uri)
    assert len(found) == 2
    assert {r.data.tags["sweep"] for r in found} == {f"sweep {tmp_path.name}/sweep"}


@pytest.mark.slow
def test_the_default_store_is_a_sqlite_file_where_the_command_runs(tmp_path):
    """Run from another folder, with no MLFLOW_TRACKING_URI: the store and its artifacts
    are there, and nowhere else."""
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "train.py"),
            "logger=mlflow",
            *SHORT,
            "trainer.max_epochs=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = runs(uri)
    assert any((tmp_path / "mlartifacts").rglob("report.md"))
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_mlflow_ui_serves_the_runs_of_the_store(tracked):
    """docs/tracking.md's `mlflow ui --backend-store-uri ...`, on 127.0.0.1: its page loads
    and its API lists the run with its metrics (bounded: a minute to start, then stopped)."""
    import socket
    import time
    import urllib.request

    uri, _ = tracked
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert ui.poll() is None, ui.stderr.read()[-3000:]
            try:
                page = urllib.request.urlopen(base, timeout=5).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer"
                time.sleep(0.5)
        assert "<title>MLflow</title>" in page
        experiment = mlflow.MlflowClient(uri).get_experiment_by_name("mnist_mlp").experiment_id
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        (run,) = json.loads(urllib.request.urlopen(request, timeout=30).read())["runs"]
        assert {"test/acc", "best/val_acc", "val/loss"} <= {
            m["key"] for m in run["data"]["metrics"]
        }
    finally:
        ui.terminate()
        ui.wait(timeout=60)


# -- a store that cannot be used: one line, at once, nothing made -----------------------------
NEW = ("logger=[csv,mlflow]", *SHORT)


def train_in(folder: Path, *args: str, **env: str) -> subprocess.Popen:
    """train.py run from ``folder`` (where the default store, mlflow.db, lives)."""
    folder.mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "train.py"), *args], cwd=folder, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**environ, **env},
    )  # fmt: skip


def ended(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=600)
    return process.returncode, err.strip().splitlines()[-1] if err.strip() else ""


def trained_in(folder: Path, *args: str, **env: str) -> tuple[int, str]:
    """:func:`train_in` in this process: its exit status and last line."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {"MLFLOW_TRACKING_URI": None, **env}
    done = run_command(str(PROJECT / "train.py"), *args, cwd=folder, env=env)
    return done.returncode, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def test_an_unwritable_store_is_one_line_at_once(tmp_path):
    from mlplab.testing import mount_tmpfs, unmount

    bad = "sqlite:////proc/none/mlflow.db"
    code, last = trained_in(tmp_path, *NEW, f"hydra.run.dir={tmp_path / 'r1'}",
                            MLFLOW_TRACKING_URI=bad)  # fmt: skip
    assert code == 2 and last.startswith("error: cannot write the MLflow store /proc/none/"), last
    assert not (tmp_path / "r1" / "checkpoints").exists()
    read_only = mount_tmpfs(tmp_path / "ro", "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
        uri = f"sqlite:///{read_only}/mlflow.db"
        code, last = trained_in(
            tmp_path, *NEW, f"hydra.run.dir={tmp_path / 'r2'}", MLFLOW_TRACKING_URI=uri
        )
    finally:
        unmount(read_only)
    assert code == 2 and last == (
        f"error: cannot write the MLflow store {read_only}/mlflow.db: Read-only file system; "
        "set MLFLOW_TRACKING_URI (logger.mlflow.tracking_uri) to a writable store"
    )


@pytest.mark.slow
def test_a_run_continued_elsewhere_or_after_its_mlflow_run_was_deleted_is_one_line(tmp_path):
    first = tmp_path / "first"
    code, last = trained_in(tmp_path / "a", *NEW, f"hydra.run.dir={first}")
    assert code == 0, last
    extend = (f"ckpt_path={first}", "trainer.max_epochs=3")
    # From another folder: its default store is not there, and none is made.
    code, last = trained_in(tmp_path / "b", *extend)
    assert code == 2 and "is in a store that is not here" in last, last
    assert not (tmp_path / "b" / "mlflow.db").exists()
    # Deleted in the store (as the UI does): restoring it is the way back.
    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    (run,) = runs(uri)
    mlflow.MlflowClient(uri).delete_run(run.info.run_id)
    code, last = trained_in(tmp_path / "a", *extend)
    assert code == 2 and f"restore it (mlflow runs restore --run-id {run.info.run_id})" in last
    # A new run into an experiment deleted in the UI.
    client = mlflow.MlflowClient(uri)
    client.delete_experiment(client.get_experiment_by_name("mnist_mlp").experiment_id)
    code, last = trained_in(tmp_path / "a", *NEW, f"hydra.run.dir={tmp_path / 'second'}")
    assert code == 2 and "the MLflow experiment mnist_mlp was deleted" in last, last


@pytest.mark.slow
def test_two_runs_starting_at_once_on_a_new_store_both_log(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    both = [
        train_in(tmp_path, *NEW, f"hydra.run.dir={tmp_path / str(seed)}", f"seed={seed}",
                 MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
        for seed in (1, 2)
    ]  # fmt: skip
    for process in both:
        code, last = ended(process)
        assert code == 0, last
    assert len(runs(uri)) == 2
