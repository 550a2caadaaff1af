"""One writer per run dir, and outputs that appear whole or not at all (mlplab.rundir).

Every case goes through the real command lines. A second writer is another real process
holding the run dir's lock; a fault is a full file system (a small tmpfs) or a signal sent
when the file being written appears, never after a sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mlplab.rundir import atomic_file, atomic_path, lock_run_dir, unlock_run_dir
from mlplab.testing import PROJECT, fill_disk, idx_bytes, mount_tmpfs, run_command, unmount

QUIET = {"HYDRA_FULL_ERROR": "0"}
SMOKE = ("train.py", "debug=smoke")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) by content."""
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def refused(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = last_line(result)
    assert line.startswith("error: "), line
    return line


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_command(*SMOKE, "logger=csv", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


class Holder:
    """Another process holding a run dir's lock (as a run writing it does) until killed."""

    def __init__(self, folder: Path) -> None:
        code = (
            "import sys, time; from mlplab.rundir import lock_run_dir; "
            f"lock_run_dir({str(folder)!r}); print('locked', flush=True); time.sleep(900)"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "locked"  # it holds the lock now

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no clean-up of its own
        self.process.wait()


# -- files that appear whole ------------------------------------------------------------------
def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("earlier")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write("half of the new")
        raise RuntimeError("the disk filled up")
    assert path.read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "earlier"  # nothing of it shows until the rename
    assert path.read_text() == "new"


# -- one writer ------------------------------------------------------------------------------
def test_a_new_run_refuses_the_dir_of_a_finished_run(finished_run):
    before = snapshot(finished_run)
    line = refused(run_command(*SMOKE, f"hydra.run.dir={finished_run}", env=QUIET))
    assert "holds another run" in line and "metrics.json" in line and "checkpoints" in line
    assert f"continue that run with: python train.py ckpt_path={finished_run}" in line
    assert snapshot(finished_run) == before  # its .hydra/ included


@pytest.mark.slow
def test_a_refused_run_leaves_no_dir_and_the_mended_command_runs_in_the_same_one(tmp_path):
    run_dir = tmp_path / "outputs" / "mine"
    refused = run_command(*SMOKE, "optimizer.lr=-1", f"hydra.run.dir={run_dir}", env=QUIET)
    assert refused.returncode == 2
    assert last_line(refused) == "error: optimizer.lr=-1 is not allowed: must be a number > 0"
    assert not run_dir.exists() and (tmp_path / "outputs").is_dir()  # only what it made
    mended = run_command(*SMOKE, f"hydra.run.dir={run_dir}", env=QUIET)
    assert mended.returncode == 0, mended.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file()


def test_a_refused_run_in_a_dir_it_did_not_make_keeps_the_dir_and_what_is_not_its_own(tmp_path):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "plan.txt").write_text("try lr=-1")  # a user's file: the dir is no run's
    for run_dir in (empty, notes):
        refused = run_command(*SMOKE, "optimizer.lr=-1", f"hydra.run.dir={run_dir}", env=QUIET)
        assert refused.returncode == 2
    assert list(empty.iterdir()) == []  # the dir stays, made by its user; Hydra's files go
    # With a file of the user's in it, nothing is removed: what is whose is not guessed.
    assert {p.name for p in notes.iterdir()} == {"plan.txt", ".hydra", ".lock", "train.log"}


def test_finished_files_have_the_mode_the_umask_gives_not_a_temporary_files(tmp_path):
    """A colleague in the run's group reads a finished run (umask 027: group may read)."""
    old = os.umask(0o027)  # inherited by the commands below
    try:
        run = tmp_path / "run"
        assert run_command(*SMOKE, "logger=csv", f"hydra.run.dir={run}").returncode == 0
        export = tmp_path / "export"
        done = run_command("export.py", f"ckpt_path={run}", f"hydra.run.dir={export}")
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        os.umask(old)
    written = [p for folder in (run, export) for p in folder.rglob("*")]
    names = {p.name for p in written}
    assert {"metrics.json", "report.md", "best.ckpt", "model", "model.onnx", "train.log"} <= names
    for path in written:
        want = 0o750 if path.is_dir() else 0o640
        assert path.stat().st_mode & 0o777 == want, f"{path}: {oct(path.stat().st_mode)}"


@pytest.mark.parametrize(
    "command",
    [
        ("eval.py", "ckpt_path={run}"),
        ("predict.py", "ckpt_path={run}", "input={run}/digits.idx.gz"),
        ("export.py", "ckpt_path={run}", "format=torchscript"),
    ],
    ids=lambda c: c[0],
)
def test_eval_predict_and_export_never_write_into_a_training_run(finished_run, command, tmp_path):
    images = tmp_path / "digits.idx.gz"
    images.write_bytes(idx_bytes(np.zeros((3, 28, 28))))
    args = [
        a.format(run=finished_run).replace(f"{finished_run}/digits.idx.gz", str(images))
        for a in command
    ]
    before = snapshot(finished_run)
    line = refused(run_command(*args, f"hydra.run.dir={finished_run}", env=QUIET))
    assert f"{command[0]} starts in an empty dir" in line
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_a_sweep_refuses_the_dir_of_a_finished_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_command("train.py", "-m", "debug=smoke", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr
    before = snapshot(sweep)
    again = ("train.py", "-m", "debug=smoke", "seed=3", f"hydra.sweep.dir={sweep}")
    line = refused(run_command(*again, env=QUIET))
    assert "holds another run" in line and "2 job dirs" in line
    assert snapshot(sweep) == before


def test_a_run_dir_has_one_writer_and_a_killed_one_never_blocks_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    assert run_command(*SMOKE, f"hydra.run.dir={run_dir}").returncode == 0
    holder = Holder(run_dir)  # a process writing that run dir
    before = snapshot(run_dir)
    resume = ("train.py", f"ckpt_path={run_dir}", "trainer.max_epochs=2")
    line = refused(run_command(*resume, env=QUIET))
    assert f"is being written by another process (pid {holder.process.pid})" in line
    assert snapshot(run_dir) == before
    holder.kill()  # SIGKILL, as a lost process: the kernel lets go of its lock
    # What a writer killed mid-write leaves: its temporary files, which the resume removes.
    stale = [run_dir / ".metrics.json.x1.part", run_dir / "csv" / ".metrics.csv.x2.part"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text("half")
    result = run_command(*resume)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_trained"] == 2
    assert not any(path.exists() for path in stale)


def test_two_new_runs_into_one_dir_at_once_one_is_refused(tmp_path):
    """The dir is empty (no run files yet), but the first run holds it: the second one is
    refused before Hydra writes a file there."""
    run_dir = tmp_path / "run"
    holder = Holder(run_dir)
    line = refused(run_command(*SMOKE, f"hydra.run.dir={run_dir}", env=QUIET))
    assert "is being written by another process" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    holder.kill()


def test_eval_writes_no_cache_where_the_checkpoint_says(finished_run, tmp_path):
    """A path in a checkpoint is read, never written: eval.py caches the data where this
    machine keeps its caches (paths.cache_dir), not where the stored config says."""
    checkpoint = torch.load(finished_run / "checkpoints" / "best.ckpt", weights_only=True)
    elsewhere = tmp_path / "not-a-cache"
    checkpoint["mlplab_config"]["data"]["cache_dir"] = str(elsewhere)
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)
    mine = tmp_path / "my-cache"
    result = run_command(
        "eval.py",
        f"ckpt_path={tampered}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        env={"MLPLAB_CACHE_DIR": str(mine)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not elsewhere.exists() and any(mine.iterdir())


def test_a_second_predict_into_one_dir_is_refused(finished_run, tmp_path):
    images = tmp_path / "digits.idx.gz"
    images.write_bytes(idx_bytes(np.zeros((5, 28, 28))))
    out = tmp_path / "predictions"
    predict = ("predict.py", f"ckpt_path={finished_run}", f"input={images}")
    holder = Holder(out)  # the first predict.py, still writing
    line = refused(run_command(*predict, f"hydra.run.dir={out}", env=QUIET))
    assert "is being written by another process" in line
    assert not (out / "predictions.csv").exists()
    holder.kill()
    done = run_command(*predict, f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    before = snapshot(out)
    line = refused(run_command(*predict, f"hydra.run.dir={out}", env=QUIET))  # finished: kept
    assert "predictions.csv" in line
    assert snapshot(out) == before


def test_the_lock_is_let_go_between_jobs_of_one_process(tmp_path):
    lock_run_dir(tmp_path)
    lock_run_dir(tmp_path)  # again: this process holds it already
    unlock_run_dir(tmp_path)
    holder = Holder(tmp_path)  # another process can take it now
    holder.kill()


# -- a full disk, a signal ---------------------------------------------------------------------
def start_until(out: Path, pattern: str, *command: str) -> subprocess.Popen:
    """Start ``command`` writing into run dir ``out``; return once a file matching
    ``pattern`` appears there (the write under way), or the command has ended."""
    process = subprocess.Popen(
        [sys.executable, *command, f"hydra.run.dir={out}"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not list(out.glob(pattern)) and process.poll() is None:
        time.sleep(0.002)  # polling: the trigger is the file, whenever it appears
    return process


@pytest.fixture
def disk(tmp_path):
    mount = mount_tmpfs(tmp_path / "disk", "1m")
    yield mount
    unmount(mount)


def test_predictions_on_a_full_disk_leave_no_partial_file(finished_run, disk, tmp_path):
    images = tmp_path / "digits.idx.gz"  # 20,000 rows of probabilities: over 1 MB of CSV
    images.write_bytes(idx_bytes(np.random.default_rng(0).integers(0, 256, (20000, 28, 28))))
    out = disk / "predict"
    result = run_command(
        "predict.py",
        f"ckpt_path={finished_run}",
        f"input={images}",
        f"hydra.run.dir={out}",
        env=QUIET,
    )
    assert refused(result).startswith("error: no space left on the device")
    # No partial file. The dir goes too, unless something was logged into it on the way.
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert set(left) <= {".hydra", ".lock", "predict.log"}, left


def test_an_export_on_a_full_disk_leaves_neither_file(finished_run, disk):
    out = disk / "export"
    fill_disk(disk, leave=200_000)  # the model is about 1 MB
    result = run_command(
        "export.py",
        f"ckpt_path={finished_run}",
        "format=torchscript",
        f"hydra.run.dir={out}",
        env=QUIET,
    )
    assert refused(result).startswith("error: no space left on the device")
    # Neither file, nor a hidden half of them. The dir goes too, unless something was logged.
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert set(left) <= {".hydra", ".lock", "export.log"}, left


@pytest.mark.slow
@pytest.mark.parametrize("room", [8_000, 40_000, 90_000])
def test_eval_on_a_full_disk_leaves_no_torn_picture_or_report(finished_run, disk, room):
    """Whatever room is left: the command ends with one line (exit 2) or succeeds having
    skipped the pictures it could not write; every file it leaves is whole."""
    out = disk / "eval"
    out.mkdir()
    fill_disk(disk, leave=room)
    result = run_command("eval.py", f"ckpt_path={finished_run}", f"hydra.run.dir={out}", env=QUIET)
    if result.returncode != 0:
        assert refused(result).startswith("error: no space left on the device")
    from PIL import Image

    for path in out.iterdir():
        assert not path.name.endswith(".part"), path
        if path.suffix == ".png":
            Image.open(path).load()  # whole
        if path.name == "metrics.json":
            json.loads(path.read_text())
    if (out / "report.md").exists():
        report = (out / "report.md").read_text()
        assert report.rstrip().endswith("`metrics.json`.")  # whole, to its last line
        for name in ("confusion_matrix.png", "misclassified.png"):
            assert (f"({name})" in report) == (out / name).exists()


@pytest.mark.slow
def test_a_signal_while_predictions_are_written_leaves_all_rows_or_none(finished_run, tmp_path):
    """SIGTERM as soon as the predictions file begins to be written (its temporary name
    appears): the command ends with all the rows in place, or with none and exit 143."""
    images = tmp_path / "digits.idx.gz"
    images.write_bytes(idx_bytes(np.random.default_rng(1).integers(0, 256, (60000, 28, 28))))
    out = tmp_path / "predict"
    process = start_until(
        out, ".predictions.csv.*", "predict.py", f"ckpt_path={finished_run}", f"input={images}"
    )
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert "Traceback" not in err
    assert not list(out.glob(".predictions.csv.*"))
    if process.returncode == 143:
        assert err.strip().splitlines()[-1].startswith("error: predict.py stopped by SIGTERM")
        assert not (out / "predictions.csv").exists()
    else:  # the rename came first: then the whole table is there
        assert process.returncode == 0, err
        assert len((out / "predictions.csv").read_text().splitlines()) == 60001


@pytest.mark.slow
def test_an_export_killed_at_any_moment_leaves_the_model_and_its_spec_together(
    finished_run, tmp_path
):
    out = tmp_path / "export"
    process = start_until(
        out, ".model-*", "export.py", f"ckpt_path={finished_run}", "format=torchscript"
    )
    process.kill()
    process.wait()
    model = out / "model"
    if model.exists():  # renamed into place as one: both, describing each other
        spec = json.loads((model / "model.json").read_text())
        assert (model / spec["model"]).stat().st_size > 0
    assert [p.name for p in out.glob("model*")] in ([], ["model"])


# -- paths in a checkpoint are data ------------------------------------------------------------
@pytest.fixture
def tampered(tmp_path) -> tuple[Path, Path, Path]:
    """A finished run (the victim), and a run whose last.ckpt names the victim's dir as its
    own output dir, checkpoint dir and logger dir."""
    victim, run = tmp_path / "victim", tmp_path / "run"
    for folder in (victim, run):
        result = run_command(*SMOKE, "logger=csv", f"hydra.run.dir={folder}")
        assert result.returncode == 0, result.stderr
    path = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    config = checkpoint["mlplab_config"]
    config["output_dir"] = str(victim)
    for callback in ("model_checkpoint", "last_checkpoint"):
        config["callbacks"][callback]["dirpath"] = str(victim / "checkpoints")
    config["logger"]["csv"]["save_dir"] = str(victim)
    torch.save(checkpoint, path)
    return victim, run, path


def test_a_checkpoint_decides_nothing_about_where_a_resume_writes(tampered):
    victim, run, path = tampered
    before = snapshot(victim)
    result = run_command("train.py", f"ckpt_path={path}", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(victim) == before
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 2
    assert f"run dir: {run}" in result.stdout


@pytest.mark.slow
def test_a_loose_checkpoint_continues_into_a_new_run_dir(tampered, tmp_path):
    victim, run, path = tampered
    loose = tmp_path / "downloaded.ckpt"
    loose.write_bytes(path.read_bytes())
    before_victim, before_run = snapshot(victim), snapshot(run)
    new = tmp_path / "new"
    result = run_command(
        "train.py", f"ckpt_path={loose}", "trainer.max_epochs=2", f"hydra.run.dir={new}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (snapshot(victim), snapshot(run)) == (before_victim, before_run)
    assert json.loads((new / "metrics.json").read_text())["epochs_trained"] == 2
    assert (new / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_a_stored_output_path_outside_the_run_is_refused(tampered, tmp_path):
    _, run, path = tampered
    checkpoint = torch.load(path, weights_only=True)
    config = checkpoint["mlplab_config"]
    config["output_dir"] = str(run)  # its own dir, and its own paths but one
    config["callbacks"]["model_checkpoint"]["dirpath"] = str(run / "checkpoints")
    config["logger"]["csv"]["save_dir"] = str(run)
    elsewhere = tmp_path / "elsewhere"
    config["callbacks"]["last_checkpoint"]["dirpath"] = str(elsewhere)
    torch.save(checkpoint, path)
    before = snapshot(run)
    line = refused(run_command("train.py", f"ckpt_path={path}", "trainer.max_epochs=2", env=QUIET))
    assert f"callbacks.last_checkpoint.dirpath='{elsewhere}', outside the run dir" in line
    assert not elsewhere.exists()
    assert {k: v for k, v in snapshot(run).items() if not k.startswith(".hydra")} == {
        k: v for k, v in before.items() if not k.startswith(".hydra")
    }


def test_a_resume_on_a_read_only_file_system_says_so_in_one_line(finished_run, tmp_path):
    mount = mount_tmpfs(tmp_path / "ro", "4m")
    try:
        subprocess.run(["cp", "-a", str(finished_run), str(mount / "run")], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        line = refused(
            run_command("train.py", f"ckpt_path={mount / 'run'}", "trainer.max_epochs=2", env=QUIET)
        )
        assert "Read-only file system" in line and "copy" in line
    finally:
        unmount(mount)
