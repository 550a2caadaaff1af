"""Crash and interruption: runs resume exactly where they stopped (real processes, real signals)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplab.testing import PROJECT, comparable, wait_for

pytestmark = pytest.mark.slow  # real processes, real signals: a minute or so

# Small batches give long epochs (219 steps on the bundled digits): room to land mid-epoch.
RUN = [
    "logger=csv",
    "data.batch_size=16",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err


def epoch_rows(run_dir: Path) -> dict[tuple[int, str], str]:
    """``(epoch, metric) -> value`` from csv/metrics.csv; a metric twice in an epoch fails."""
    rows: dict[tuple[int, str], str] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key in ("train/loss", "val/loss", "val/acc"):
                if row.get(key) and row.get("epoch"):
                    cell = (int(row["epoch"]), key)
                    assert cell not in rows, f"{cell} logged twice"
                    rows[cell] = row[key]
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = finish(start(*RUN, f"hydra.run.dir={out}"))
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text())


def test_killed_run_resumed_from_last_checkpoint_ends_with_identical_metrics(reference, tmp_path):
    run_dir = tmp_path / "killed"
    process = start(*RUN, f"hydra.run.dir={run_dir}")
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)  # epoch 1 is complete
    time.sleep(0.3)  # well into epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists()  # it really died before finishing

    code, out, err = finish(
        start(
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={tmp_path / 'resume'}",
        )
    )
    assert code == 0, err
    assert f"resuming {run_dir}" in out
    resumed = json.loads((run_dir / "metrics.json").read_text())  # the run continued in its own dir
    assert comparable(resumed) == comparable(reference)
    # The CSV log holds every epoch once, the ones before the kill included.
    reference_dir = Path(reference["best_checkpoint"]).parent.parent
    assert epoch_rows(run_dir) == epoch_rows(reference_dir)


def test_sigterm_saves_a_checkpoint_and_resuming_it_matches_the_uninterrupted_run(
    reference, tmp_path
):
    run_dir = tmp_path / "terminated"
    process = start(*RUN, f"hydra.run.dir={run_dir}")
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)  # what SLURM sends before preemption
    code, _, err = finish(process)
    interrupted = run_dir / "checkpoints" / "interrupted.ckpt"
    assert code == 143
    last_line = err.strip().splitlines()[-1]
    # The epoch it landed in depends on timing (epoch 2, almost always); the rest is fixed.
    assert re.fullmatch(
        rf"error: training interrupted by SIGTERM in epoch \d; checkpoint saved, "
        rf"resume with: python train.py ckpt_path={re.escape(str(interrupted))}",
        last_line,
    ), last_line
    assert interrupted.exists()

    code, _, err = finish(start(f"ckpt_path={interrupted}", f"hydra.run.dir={tmp_path / 'resume'}"))
    assert code == 0, err
    # Mid-epoch resume: the batches already trained are skipped, RNGs restored: same numbers.
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(resumed) == comparable(reference)
    assert all(0 < row["epoch_s"] < 60 for row in resumed["history"])  # wall times stay sane


def test_resume_accepts_a_run_dir(reference, tmp_path):
    run_dir = tmp_path / "short"
    code, _, err = finish(
        start(
            *RUN[:-3],
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        )
    )
    assert code == 0, err
    code, out, err = finish(start(f"ckpt_path={run_dir}", f"hydra.run.dir={tmp_path / 'again'}"))
    assert code == 2, err  # nothing left to train (max_epochs reached): refused, with the way on
    assert "is finished" in err and "trainer.max_epochs=N" in err
    code, out, err = finish(start(f"ckpt_path={run_dir}", "trainer.max_epochs=2"))
    assert code == 0, err
    assert f"resuming {run_dir}" in out and "(trainer.max_epochs=2)" in out


def test_the_printed_resume_command_works_when_pasted_for_an_awkward_run_dir(tmp_path):
    # Spaces, quotes and non-ASCII in the run dir: the command must survive shell and Hydra.
    run_dir = tmp_path / "my run's dir ü"
    # All 4 epochs of RUN: 3 remain after the first checkpoint, so SIGTERM lands in training
    # (with 2, a fast machine could already be testing, past Lightning's signal handler).
    process = start(*RUN, f'hydra.run.dir="{run_dir}"')
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    command = err.strip().splitlines()[-1].split("resume with: ", 1)[1]
    assert command.startswith("python train.py ")
    outputs = PROJECT / "outputs"
    before = set(outputs.glob("*/*")) if outputs.exists() else set()
    pasted = subprocess.run(
        ["bash", "-c", command.replace("python", shlex.quote(sys.executable), 1)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert pasted.returncode == 0, pasted.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_trained"] == 4
    # The resumed run's Hydra files and log are in its own run dir, not in a new outputs/ dir.
    (resumed_hydra,) = (run_dir / ".hydra").glob("resumed-*")
    assert (resumed_hydra / "overrides.yaml").exists()
    after = set(outputs.glob("*/*")) if outputs.exists() else set()
    assert after == before


def test_a_kill_between_validation_and_checkpoint_keeps_every_epoch_once(reference, tmp_path):
    # The CSV already holds epoch 2's validation, last.ckpt still holds epoch 1: the resumed
    # run trains epoch 2 again, and its rows must replace the earlier ones, not repeat them.
    run_dir = tmp_path / "killed"
    process = start(*RUN, f"hydra.run.dir={run_dir}")
    log = run_dir / "csv" / "metrics.csv"
    deadline = time.monotonic() + 900
    while not (
        log.exists()
        and any(r.get("epoch") == "1" and r.get("val/loss") for r in csv.DictReader(log.open()))
    ):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, _, err = finish(start(f"ckpt_path={run_dir}", f"hydra.run.dir={tmp_path / 'resume'}"))
    assert code == 0, err
    reference_dir = Path(reference["best_checkpoint"]).parent.parent
    assert epoch_rows(run_dir) == epoch_rows(reference_dir)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(resumed) == comparable(reference)
