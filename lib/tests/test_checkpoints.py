"""Checkpoints survive real runs: non-improving epochs, failed writes, full disks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import lightning as L
import pytest
import torch
from mnist_mlp.train import train

from mlplab.checkpoints import AtomicCheckpointIO
from mlplab.testing import PROJECT, compose_config, run_python

QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


class LastCheckpointEpochs(L.Callback):
    """At the start of each epoch, note which epoch last.ckpt and best.ckpt hold (0 = the
    first), in ``seen.jsonl`` beside the checkpoints."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            held = [
                torch.load(self.folder / f"{name}.ckpt", weights_only=True)["epoch"]
                for name in ("last", "best")
            ]
            with open(self.folder.parent / "seen.jsonl", "a") as f:
                f.write(json.dumps([trainer.current_epoch, *held]) + "\n")


def test_last_checkpoint_is_written_after_every_epoch_improved_or_not(tmp_path):
    # No regularization and Adam on 500 images: val loss stops improving after a few epochs.
    target = f"{__name__}.LastCheckpointEpochs"
    watcher = f"+callbacks.watcher={{_target_:{target},folder:'{tmp_path}/checkpoints'}}"
    cfg = compose_config(
        [*QUIET, "experiment=overfit_small_data", "trainer.max_epochs=10", watcher], tmp_path
    )
    metrics = train(cfg)
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 9
    # last.ckpt always holds the epoch just finished; best.ckpt fell behind it.
    assert all(last == epoch - 1 for epoch, last, _ in seen), seen
    assert any(best < last for _, last, best in seen)
    assert metrics["best_epoch"] < metrics["epochs_trained"]


def test_a_failed_checkpoint_write_leaves_the_previous_file_and_no_leftovers(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")  # as a full disk fails mid-write

    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(100_000), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    io.save_checkpoint({"epoch": 3}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_a_picture_that_cannot_be_written_is_reported_and_the_rest_is_kept(tmp_path, caplog):
    (tmp_path / "curves.png").mkdir()  # writing it fails with a real OSError
    metrics = train(compose_config([*QUIET, "trainer.max_epochs=2"], tmp_path))
    assert "could not write" in caplog.text and "curves.png" in caplog.text
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "confusion_matrix.png" in report and "(curves.png)" not in report


def test_a_full_disk_stops_the_run_with_one_line_and_no_torn_checkpoint(small_disk):
    run_dir = small_disk / "run"
    result = run_python(
        "train.py", "debug=smoke", f"hydra.run.dir={run_dir}", env={"HYDRA_FULL_ERROR": "0"}
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device writing "), last
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in (run_dir / "checkpoints").glob("*")]
    assert all(not name.endswith(".part") for name in leftovers), leftovers
    for name in leftovers:  # whatever checkpoint is there is whole
        torch.load(run_dir / "checkpoints" / name, weights_only=True)


def test_a_run_dir_resumes_from_its_newer_checkpoint_interrupted_or_last(tmp_path):
    from mlplab.resume import find_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert find_checkpoint(tmp_path) == folder / "last.ckpt"  # none yet: the error names it
    for name, mtime in (("last.ckpt", 100), ("interrupted.ckpt", 200), ("best.ckpt", 300)):
        (folder / name).write_bytes(b"")
        os.utime(folder / name, (mtime, mtime))
    assert find_checkpoint(tmp_path) == folder / "interrupted.ckpt"
    os.utime(folder / "last.ckpt", (400, 400))  # a later epoch ended after an old interruption
    assert find_checkpoint(tmp_path) == folder / "last.ckpt"
    assert find_checkpoint(tmp_path, "best.ckpt") == folder / "best.ckpt"


# -- a stored config is data: it builds nothing outside the trusted packages ------------------
SLOW = pytest.mark.slow
PAYLOADS = {
    "pathlib": lambda target: {
        "_target_": "pathlib.Path.touch",
        "self": {"_target_": "pathlib.Path", "_args_": [str(target)]},
    },
    "shutil": lambda target: {"_target_": "shutil.copyfile", "src": __file__, "dst": str(target)},
    "builtins": lambda target: {"_target_": "builtins.open", "file": str(target), "mode": "w"},
    "torch.save": lambda target: {"_target_": "torch.save", "obj": 1, "f": str(target)},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trusted") / "run"
    proc = run_python("train.py", "debug=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def tampered(run_dir: Path, tmp_path: Path, where: str, payload: dict) -> Path:
    """A copy of the run's best checkpoint whose stored config holds ``payload`` at ``where``."""
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    node = state["mlplab_config"]
    *parents, last = where.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = payload
    path = tmp_path / "evil" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


def assert_refused(command: list[str], key: str, path: Path, where: str, out: Path) -> None:
    proc = run_python(*command, f"{key}={path}", f"hydra.run.dir={out}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the config stored in"), proc.stderr[-2000:]
    assert f"names {where}._target_=" in last and "refused, nothing was built" in last


@pytest.mark.parametrize(
    "payload", [p if p == "shutil" else pytest.param(p, marks=pytest.mark.slow) for p in PAYLOADS]
)
def test_a_stored_config_runs_no_code(finished_run, tmp_path, payload):
    target = tmp_path / "created-by-the-checkpoint"
    path = tampered(finished_run, tmp_path, "callbacks.evil", PAYLOADS[payload](target))
    assert_refused(["eval.py"], "ckpt_path", path, "callbacks.evil", tmp_path / "out")
    assert not target.exists()


@pytest.mark.parametrize(
    ("command", "key", "where"),
    [
        pytest.param(["eval.py"], "ckpt_path", "data.augment", marks=SLOW),
        pytest.param(["train.py"], "ckpt_path", "callbacks.evil", marks=SLOW),
        pytest.param(
            ["train.py", "debug=smoke", "model=pretrained"],
            "model.checkpoint",
            "callbacks.evil",
            marks=SLOW,
        ),
        (["predict.py", f"input={__file__}"], "ckpt_path", "data.augment"),
        pytest.param(["predict.py", f"input={__file__}"], "ckpt_path", "module.net", marks=SLOW),
        pytest.param(["export.py"], "ckpt_path", "data.augment", marks=SLOW),
    ],
    ids=["eval-augment", "resume", "transfer", "predict-data", "predict-net", "export"],
)
def test_no_entry_point_builds_from_a_stored_config(finished_run, tmp_path, command, key, where):
    target = tmp_path / "created-by-the-checkpoint"
    path = tampered(finished_run, tmp_path, where, PAYLOADS["pathlib"](target))
    assert_refused(command, key, path, where, tmp_path / "out")
    assert not target.exists()


def test_a_users_own_package_is_trusted_once_declared(finished_run, tmp_path):
    from mlplab.stored import check_targets, trust_packages

    config = {"callbacks": {"mine": {"_target_": "my_project.MyCallback"}}}
    with pytest.raises(Exception, match=r"my_project\.MyCallback"):
        check_targets(config, "test")
    trust_packages(["my_project"])
    try:
        check_targets(config, "test")
    finally:
        trust_packages([])


def test_an_unsafe_pickle_gets_safe_advice(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "obj": uuid.uuid4()}, path)
    proc = run_python("eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "never unpickles" in proc.stderr and "weights_only" not in proc.stderr


def _project_named(root: Path, package: str) -> Path:
    """A copy of this repository's project whose package is called ``package``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT / "conf", root / "conf")
    for script in ("train.py", "eval.py"):
        shutil.copy(PROJECT / script, root / script)
    shutil.copytree(PROJECT / "src" / "mnist_mlp", root / "src" / package)
    return root


def _rename(root: Path, old: str, new: str) -> None:
    """What renaming a project's package touches: its folder, nothing else (conf/ names the
    package as ``${project:...}``, and its own modules import each other relatively)."""
    (root / "src" / old).rename(root / "src" / new)
    for path in [*(root / "conf").rglob("*.yaml"), *(root / "src" / new).rglob("*.py")]:
        assert old not in path.read_text(), path


def test_checkpoints_written_before_a_project_is_renamed_still_load(tmp_path):
    project, run = _project_named(tmp_path / "project", "oldproj"), tmp_path / "run"

    def command(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(project / "src")}
        return subprocess.run(
            [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True
        )

    done = command("train.py", "debug=smoke", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    _rename(project, "oldproj", "newproj")
    # Nothing to list in trusted_packages: the project's own package is trusted as it is now.
    done = command("eval.py", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
