"""Fault injection: each signal at each phase of a real run, resumed with the command the run
printed, ends with the uninterrupted run's exact metrics and every epoch once in the CSV.

A signal is sent when the run says it is in the phase (``fault_points.PauseAt`` writes a
marker file and holds the run there until the signal is noted), never after a sleep.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlplab.testing import PROJECT, comparable, wait_for

pytestmark = pytest.mark.slow  # two or three real processes a case

RUN = [
    "logger=csv",
    "data.train_size=640",
    "data.batch_size=64",
    "data.eval_batch_size=100",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    TRUST := "trusted_packages=[fault_points]",  # the pausing callback, in the checkpoints
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).parent)}
EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def pause_at(phase: str, marker: Path) -> str:
    return f"+callbacks.pause={{_target_:fault_points.PauseAt,phase:{phase},marker:'{marker}'}}"


def epochs_once(run_dir: Path) -> dict[tuple[int, str], str]:
    """``(epoch, metric) -> value`` from csv/metrics.csv; a metric twice in an epoch fails."""
    rows: dict[tuple[int, str], str] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key in ("train/loss", "val/loss", "test/acc"):
                if row.get(key):
                    cell = (int(row["epoch"]), key)
                    assert cell not in rows, f"{cell} logged twice"
                    rows[cell] = row[key]
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = finish(start(*RUN, f"hydra.run.dir={out}"))
    assert code == 0, err[-2000:]
    return json.loads((out / "metrics.json").read_text()), epochs_once(out)


def resume_command(stderr: str, run_dir: Path, signum: int) -> list[str]:
    """The command the run printed (SIGTERM, Ctrl-C), or the run dir (after SIGKILL)."""
    if signum == signal.SIGKILL:
        return [
            sys.executable,
            "train.py",
            f"ckpt_path={run_dir}",
            "trusted_packages=[fault_points]",
        ]
    last = stderr.strip().splitlines()[-1]
    assert " with: python train.py " in last, stderr[-2000:]
    command = shlex.split(last.split(" with: ", 1)[1])
    return [sys.executable, *command[1:], TRUST]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name
)
@pytest.mark.parametrize("phase", ["train_batch", "validation", "checkpoint", "test"])
def test_a_signal_at_any_moment_resumes_exactly(reference, tmp_path, phase, signum):
    expected, expected_rows = reference
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = start(*RUN, pause_at(phase, marker), f"hydra.run.dir={run_dir}")
    wait_for(marker, process, timeout=900)
    process.send_signal(signum)
    code, _, err = finish(process)
    assert code == EXIT[signum], err[-3000:]
    assert "Traceback" not in err
    assert not (run_dir / "metrics.json").exists()  # nothing claims to be finished
    resumed = subprocess.run(
        resume_command(err, run_dir, signum), cwd=PROJECT, env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(metrics) == comparable(expected)
    assert epochs_once(run_dir) == expected_rows
    assert not list((run_dir / "checkpoints").glob(".*.part"))


def test_a_kill_right_after_a_resume_starts_loses_no_csv_row(reference, tmp_path):
    """SIGKILL as the resumed run's training starts (its CSV logger set up): the CSV on
    disk is the interrupted run's, whole; resumed again, every epoch is in it once."""
    expected, expected_rows = reference
    run_dir, marker, resumed = tmp_path / "run", tmp_path / "paused", tmp_path / "resumed"
    pause = (
        "+callbacks.pause={_target_:fault_points.PauseAt,phase:train_batch,"
        f"marker:'{marker}',on_resume:'{resumed}'}}"
    )
    process = start(*RUN, pause, f"hydra.run.dir={run_dir}")
    wait_for(marker, process, timeout=900)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err[-3000:]
    on_disk = (run_dir / "csv" / "metrics.csv").read_text()
    command = resume_command(err, run_dir, signal.SIGTERM)
    resume = subprocess.Popen(command, cwd=PROJECT, env=ENV, stdout=subprocess.PIPE, text=True)
    wait_for(resumed, resume, timeout=900)
    resume.kill()
    resume.communicate(timeout=600)
    assert (run_dir / "csv" / "metrics.csv").read_text() == on_disk
    again = subprocess.run(command, cwd=PROJECT, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert comparable(json.loads((run_dir / "metrics.json").read_text())) == comparable(expected)
    assert epochs_once(run_dir) == expected_rows
    assert not list((run_dir / "csv").glob(".*.part"))


def test_a_second_ctrl_c_is_quiet(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    process = start(*RUN, pause_at("train_batch", marker), f"hydra.run.dir={run_dir}")
    wait_for(marker, process, timeout=900)
    process.send_signal(signal.SIGINT)
    # The second Ctrl-C once the first one is noted (the run says so on stderr).
    line = process.stderr.readline()
    while line and "Ctrl-C: stopping" not in line:
        line = process.stderr.readline()
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    assert "resume with: python train.py ckpt_path=" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("logger", ["csv", "[wandb,csv]"])  # W&B offline, and the CSV
def test_a_moved_run_dir_continues_where_it_is(reference, tmp_path, logger):
    """Resuming a copy of an interrupted run dir writes into the copy only: checkpoints,
    metrics, report, and its W&B run (the same run id, continued in the copy)."""
    expected, _ = reference
    original, marker = tmp_path / "original", tmp_path / "paused"
    run = [f"logger={logger}", *RUN[1:]]
    process = start(*run, pause_at("train_batch", marker), f"hydra.run.dir={original}")
    wait_for(marker, process, timeout=900)
    process.send_signal(signal.SIGTERM)
    assert finish(process)[0] == 143
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(original, moved)
    before = {p: p.stat().st_mtime_ns for p in original.rglob("*") if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "train.py", f"ckpt_path={moved}", TRUST],
        cwd=PROJECT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable(json.loads((moved / "metrics.json").read_text())) == comparable(expected)
    assert {p: p.stat().st_mtime_ns for p in original.rglob("*") if p.is_file()} == before
    assert not (original / "metrics.json").exists()
    if "wandb" in logger:  # the copy's W&B run goes on under the original's id, in the copy
        runs = sorted(p.name for p in (moved / "wandb").glob("offline-run-*"))
        assert len(runs) == 2 and len({name.rsplit("-", 1)[1] for name in runs}) == 1, runs
        assert len(list((original / "wandb").glob("offline-run-*"))) == 1
        assert (moved / "wandb" / "latest-run").resolve().parent == (moved / "wandb").resolve()
