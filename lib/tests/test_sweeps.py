"""Sweeps as a user runs them: real Hydra multirun, sweepers and launchers."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mnist_mlp.module import Classifier

from mlplab.stored import load_run_config
from mlplab.sweep import _log_params
from mlplab.testing import PROJECT, run_command, run_python, wait_for
from mlplab.testing.wandb_records import summary_and_config

SMOKE = ["debug=smoke"]


def multirun(*args: str, sweep_dir: Path) -> subprocess.CompletedProcess:
    """``python train.py -m <args>``: in this process (:func:`mlplab.testing.run_command`),
    unless its jobs run in processes of their own (joblib) or log to W&B (whose service
    outlives a command)."""
    if not any(a.startswith(("hydra/launcher=", "logger=wandb")) for a in args):
        return run_command("train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}")
    return subprocess.run(
        [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grid_gives_each_job_its_dir_and_wandb_run_grouped_by_sweep(tmp_path):
    result = multirun(
        *SMOKE,
        "logger=wandb",
        "optimizer=sgd,adam",
        "regularization.dropout=0.0,0.3",
        sweep_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert {r["overrides"] for r in rows} == {
        f"debug=smoke logger=wandb optimizer={o} regularization.dropout={d}"
        for o in ("sgd", "adam")
        for d in ("0.0", "0.3")
    }
    groups, names = set(), set()
    for job in range(4):
        (log,) = (tmp_path / str(job) / "wandb").glob("offline-run-*/run-*.wandb")
        summary, _ = summary_and_config(log)
        assert summary["_exit_code"] == 0  # each job's W&B run finished at the job's end
        groups.add(summary["_group"])
        names.add(summary["_name"])
    assert groups == {f"sweep {tmp_path.parent.name}/{tmp_path.name}"} and len(names) == 4
    for name in ("summary.csv", "summary.md", "summary.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_optuna_search_runs_seeded_trials_and_reports_the_best(tmp_path):
    result = multirun(
        *SMOKE, "hparams_search=optuna", "hydra.sweeper.n_trials=3", sweep_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert len(summary_rows(tmp_path)) == 3
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_params" in best and "best_value" in best
    values = [
        json.loads((tmp_path / str(j) / "metrics.json").read_text())["val/acc_best"]
        for j in range(3)
    ]
    assert f"best_value: {max(values)}" in best  # the sweeper maximized what train.py returned
    # The summary plot takes each parameter's scale from the search space.
    scales = _log_params(tmp_path)
    assert scales["optimizer.lr"] is True and scales["regularization.dropout"] is False
    assert (tmp_path / "summary.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_stored_study_run_again_continues_with_new_trials_in_new_job_dirs(tmp_path):
    study = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        "hydra.sweeper.study_name=s1",
    ]
    sweep_dir = tmp_path / "sweep"  # the same sweep dir both times: nothing may be overwritten
    first = multirun(*SMOKE, *study, sweep_dir=sweep_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    firsts = {j: (sweep_dir / str(j) / "metrics.json").read_text() for j in range(3)}
    second = multirun(*SMOKE, *study, sweep_dir=sweep_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "study s1 continues after its 3 trials" in second.stdout + second.stderr
    jobs = sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit())
    assert jobs == list(range(6))
    assert all((sweep_dir / str(j) / "metrics.json").read_text() == firsts[j] for j in range(3))

    def params(job: int) -> tuple[str, ...]:
        overrides = (sweep_dir / str(job) / ".hydra" / "overrides.yaml").read_text()
        return tuple(line for line in overrides.splitlines() if "debug=" not in line)

    assert {params(j) for j in range(3)}.isdisjoint({params(j) for j in range(3, 6)})
    with open(sweep_dir / "study.csv") as f:
        trials = list(csv.DictReader(f))
    assert [t["number"] for t in trials] == [str(i) for i in range(6)]
    assert {t["state"] for t in trials} == {"COMPLETE"}
    for job, trial in enumerate(trials):  # trial n is job n
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert float(trial["value"]) == pytest.approx(metrics["val/acc_best"])


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_sharing_the_cores(tmp_path):
    result = multirun(
        *SMOKE,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer=sgd,adam",
        sweep_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        assert metrics["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)


@pytest.mark.slow
def test_the_summary_names_each_jobs_training_doctor_findings(tmp_path):
    result = multirun(
        "logger=csv",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=4",
        "optimizer.lr=0.01,2.0",
        sweep_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["overrides"].split()[-1]: r for r in summary_rows(tmp_path)}
    assert rows["optimizer.lr=0.01"]["doctor"] == ""
    assert "loss_spike" in rows["optimizer.lr=2.0"]["doctor"].split()
    assert "loss_spike" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = multirun(
        *SMOKE,
        "regularization.dropout=0.0,1.5",
        "optimizer.lr=0.01,1e12",
        "trainer.limit_train_batches=20",
        sweep_dir=tmp_path,
    )
    # The sweep goes on, writes its summary, then exits 1 naming where the errors are.
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 of 4 jobs did not succeed (failed); their errors: ")
    assert str(tmp_path / "1" / "failure.json") in last
    rows = {r["overrides"]: r for r in summary_rows(tmp_path)}
    ok = rows[
        "debug=smoke regularization.dropout=0.0 optimizer.lr=0.01 trainer.limit_train_batches=20"
    ]
    assert ok["status"] == "ok" and float(ok["test_acc"]) > 0
    huge_lr = "optimizer.lr=1000000000000.0"  # Hydra records 1e12 as a float
    nan = rows[f"debug=smoke regularization.dropout=0.0 {huge_lr} trainer.limit_train_batches=20"]
    assert nan["status"] == "failed" and "DivergenceError" in nan["error"]
    out_of_range = rows[
        "debug=smoke regularization.dropout=1.5 optimizer.lr=0.01 trainer.limit_train_batches=20"
    ]
    assert out_of_range["status"] == "failed"
    assert "regularization.dropout=1.5 is not allowed" in out_of_range["error"]
    assert "failed" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_fail_fast_makes_a_failure_fatal(tmp_path):
    result = multirun(
        *SMOKE, "sweep.fail_fast=true", "regularization.dropout=1.5,0.0", sweep_dir=tmp_path
    )
    assert result.returncode == 2
    assert "error: regularization.dropout=1.5 is not allowed" in result.stderr
    assert not (tmp_path / "1").exists()  # the second job never ran


@pytest.mark.slow
def test_summarize_rebuilds_the_summary_of_an_interrupted_sweep(tmp_path):
    assert multirun(*SMOKE, "optimizer=sgd,adam", sweep_dir=tmp_path).returncode == 0
    for name in ("summary.csv", "summary.md", "summary.png"):
        (tmp_path / name).unlink()
    (tmp_path / "1" / "metrics.json").unlink()  # as if job 1 had been killed mid-run
    result = subprocess.run(
        [sys.executable, "-m", "mlplab.summarize", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in summary_rows(tmp_path)] == ["ok", "incomplete"]
    assert (tmp_path / "summary.png").exists()


@pytest.mark.slow
def test_ddp_cpu_trains_with_two_processes_and_reports_one_set_of_metrics(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    for run_dir, extra in ((single, []), (ddp, ["trainer=ddp_cpu"])):
        result = subprocess.run(
            [sys.executable, "train.py", *SMOKE, *extra, f"hydra.run.dir={run_dir}"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("test accuracy") == 1  # printed once, by rank zero
    single_metrics = json.loads((single / "metrics.json").read_text())
    ddp_metrics = json.loads((ddp / "metrics.json").read_text())
    assert ddp_metrics.keys() == single_metrics.keys()
    assert (ddp_metrics["world_size"], single_metrics["world_size"]) == (2, 1)
    assert ddp_metrics["split_sizes"] == single_metrics["split_sizes"]
    assert (ddp / "train_ddp_process_1.log").exists()  # the second process logged to the same dir


@pytest.mark.slow
def test_ddp_val_and_test_metrics_equal_the_single_process_ones_on_uneven_splits(tmp_path):
    # 999 test and 499 val examples over 2 processes: no example may count twice.
    run_dir = tmp_path / "ddp"
    uneven = ["data.test_size=999", "data.val_size=499", "trainer=ddp_cpu", "logger=csv"]
    # data.global_batch: 64 in all per step, 32 per process.
    uneven += ["data.global_batch=true", "data.batch_size=64", "trainer.limit_train_batches=1.0"]
    result = run_python(
        "train.py",
        *SMOKE,
        *uneven,
        f"hydra.run.dir={run_dir}",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps == math.ceil(math.ceil(3502 / 2) / 32)  # 5,000 - 999 - 499 = 3,502 to train
    # The same weights, measured in this one process on the whole splits.
    module = Classifier.load_from_checkpoint(
        metrics["best_checkpoint"], map_location="cpu", weights_only=True
    ).eval()
    datamodule = instantiate(load_run_config(metrics["best_checkpoint"]).data)
    datamodule.setup()
    for split, row in (("test", metrics), ("val", metrics["history"][-1])):
        x, y = datamodule.splits[split]
        with torch.no_grad():
            logits = module(x)
        correct = int((logits.argmax(1) == y).sum())
        assert row[f"{split}/acc"] * len(y) == pytest.approx(correct, abs=1e-3), split
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        assert row[f"{split}/loss"] == pytest.approx(loss, rel=1e-5), split


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("submitit_slurm", "SlurmLauncher"),
        ("submitit_local", "LocalLauncher"),
        ("joblib", "JoblibLauncher"),
    ],
)
def test_cluster_launchers_compose(launcher, target):
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.slow
def test_sigterm_stops_the_sweep_instead_of_counting_as_a_failed_job(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "-m",
            "logger=csv",
            "data.batch_size=16",
            "trainer.max_epochs=4",
            "trainer.enable_progress_bar=false",
            "optimizer=sgd,adam",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = tmp_path / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 900
    while not last.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 143, err
    assert "resume with: python train.py ckpt_path=" in err.strip().splitlines()[-1]
    assert (tmp_path / "0" / "checkpoints" / "interrupted.ckpt").exists()
    assert json.loads((tmp_path / "0" / "failure.json").read_text())["status"] == "interrupted"
    assert "| interrupted |" in (tmp_path / "summary.md").read_text()  # summarized as it stopped
    assert not (tmp_path / "1").exists()  # the sweep stopped


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_a_grid_job_stops_the_sweep_in_one_line(tmp_path, signum):
    """The signal lands once job 0 has its metrics: in its report, in Hydra's making of the
    next job, or as the next job starts or fits. Wherever: job 0 stays ok, no later job
    completes, and the sweep ends with its summary and one error line."""
    process = subprocess.Popen(
        [sys.executable, "train.py", "-m", *SMOKE, "seed=1,2,3", f"hydra.sweep.dir={tmp_path}"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(tmp_path / "0" / "metrics.json", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: "), err
    first, *later = summary_rows(tmp_path)
    assert first["status"] == "ok", err[-3000:]
    assert all(row["status"] in ("interrupted", "not run") for row in later), later
    assert not (tmp_path / "2" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("to", ["parent", "group"])
def test_ctrl_c_stops_a_joblib_sweep_with_a_checkpoint_per_running_job(tmp_path, to):
    """Ctrl-C in a terminal reaches every process of the sweep ("group"); a scheduler's
    signal only the sweep's own process ("parent"), which passes it on to its workers."""
    process = subprocess.Popen(
        [
            sys.executable, "train.py", "-m", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "logger=csv", "data.batch_size=16",
            "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
            "optimizer=sgd,adam,momentum", f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a shell job has
    )  # fmt: skip
    running = [tmp_path / job / "checkpoints" / "last.ckpt" for job in ("0", "1")]
    deadline = time.monotonic() + 900
    while not all(path.exists() for path in running):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    if to == "group":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=900)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for job in ("0", "1"):
        failure = json.loads((tmp_path / job / "failure.json").read_text())
        assert failure["status"] == "interrupted", (failure, err[-3000:])
        assert (tmp_path / job / "checkpoints" / "interrupted.ckpt").exists(), err[-3000:]
        assert f"job {job}: resume with: python train.py ckpt_path=" in out
    assert not (tmp_path / "2" / "metrics.json").exists()  # no job starts after the signal
    summary = (tmp_path / "summary.md").read_text()
    assert "2 interrupted" in summary


def test_a_sweep_whose_jobs_all_fail_exits_1_after_its_summary(tmp_path):
    result = multirun(*SMOKE, "regularization.dropout=1.5,2.0", sweep_dir=tmp_path)
    assert result.returncode == 1, result.stderr
    assert (tmp_path / "summary.md").is_file()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 jobs did not succeed (failed); their errors: ")
    assert [r["status"] for r in summary_rows(tmp_path)] == ["failed", "failed"]


def test_a_metric_the_runs_do_not_record_fails_the_first_job_and_stops_the_sweep(tmp_path):
    result = multirun(*SMOKE, "optimized_metric=val/f1_best", "seed=1,2", sweep_dir=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if "UnrecordedMetric" in line]
    assert len(said) == 1 and "sweep stops" in said[0], result.stderr[-2000:]
    assert "optimized_metric=val/f1_best is not a metric this run records" in said[0]
    assert "it records " in said[0] and "val/acc_best" in said[0]
    assert [r["status"] for r in summary_rows(tmp_path)] == ["failed", "not run"]
    assert not (tmp_path / "1" / "metrics.json").exists()  # the second job never trained
    assert (
        "2 jobs: 0 ok, 1 failed, 0 incomplete, 1 not run." in (tmp_path / "summary.md").read_text()
    )


@pytest.mark.parametrize("sweeper", ["basic", "optuna"])
def test_a_secret_on_a_sweeps_command_line_is_in_no_file_of_the_sweep(tmp_path, sweeper):
    secrets = {"api_key": "SECRET1", "secret_key": "SECRET2", "private_key": "SECRET3"}
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=1"] if sweeper == "optuna" else []
    result = multirun(
        *SMOKE, "logger=csv", *search, *(f"+notes.{k}={v}" for k, v in secrets.items()),
        sweep_dir=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert "multirun.yaml" in {p.name for p in files}
    for path in files:
        assert not any(s.encode() in path.read_bytes() for s in secrets.values()), path
    assert "+notes.secret_key=***" in (tmp_path / "multirun.yaml").read_text()


def test_jobs_that_differ_only_by_seed_are_one_configuration(tmp_path):
    result = multirun(*SMOKE, "seed=1,2,3", sweep_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in range(3)]
    tests = [m["test/acc"] for m in jobs]
    with open(tmp_path / "summary_configs.csv") as f:
        (config,) = list(csv.DictReader(f))
    assert config["configuration"] == "debug=smoke" and config["n"] == "3"
    assert float(config["test_acc_mean"]) == pytest.approx(sum(tests) / 3)
    assert float(config["test_acc_min"]) == min(tests) and float(config["test_acc_max"]) == max(
        tests
    )
    mean = sum(tests) / 3
    std = (sum((t - mean) ** 2 for t in tests) / 2) ** 0.5
    assert float(config["test_acc_std"]) == pytest.approx(std)
    # 95% interval with Student's t for 2 degrees of freedom (4.303)
    assert float(config["test_acc_ci95"]) == pytest.approx(4.3027 * std / 3**0.5, rel=1e-3)
    summary = (tmp_path / "summary.md").read_text()
    assert "Best configuration by mean best val accuracy over its 3 runs: `debug=smoke`" in summary
