"""Checkpoints survive real runs: non-improving epochs, failed writes, full disks."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import uuid
from pathlib import Path

import lightning as L
import pytest
import torch
from mnist_mlp.train import train

from mlplab.checkpoints import AtomicCheckpointIO
from mlplab.testing import PROJECT, compose_config, run_command

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
    result = run_command(
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
    proc = run_command("train.py", "debug=smoke", f"hydra.run.dir={run_dir}")
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
    proc = run_command(*command, f"{key}={path}", f"hydra.run.dir={out}")
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


# Callables of each trusted package that a tampered config could name: each would run (write a
# file, unpickle, train, load a checkpoint with weights_only=False) if it were built.
CALLABLES = {
    "mlplab-function": lambda target: {
        "_target_": "mlplab.rundir.write_text",
        "path": str(target),
        "text": "written by the checkpoint",
    },
    "torch-function": lambda target: {
        "_target_": "torch.serialization.load",
        "f": str(target),
        "weights_only": False,
    },
    "lightning-function": lambda target: {
        "_target_": "lightning.fabric.utilities.cloud_io._load",
        "path_or_url": str(target),
    },
    "torchmetrics-function": lambda target: {
        "_target_": "torchmetrics.functional.accuracy",
        "preds": [0],
        "target": [0],
    },
    "project-function": lambda target: {
        "_target_": "mnist_mlp.train.train",
        "cfg": {"output_dir": str(target)},
    },
    "classmethod": lambda target: {
        "_target_": "mnist_mlp.module.Classifier.load_from_checkpoint",
        "checkpoint_path": str(target),
        "weights_only": False,
    },
    "class-of-no-kind": lambda target: {
        "_target_": "mlplab.rundir.OneWriterPerRunDir",
        "command": str(target),
    },
}


def _evil_pickle(path: Path) -> None:
    """A checkpoint-like file whose unpickling would create ``path.with_suffix('.ran')``."""

    class Payload:
        def __reduce__(self):
            return (Path.touch, (path.with_suffix(".ran"),))

    torch.save({"payload": Payload()}, path)


@pytest.mark.parametrize("callable_", list(CALLABLES))
def test_a_stored_config_builds_no_function_of_a_trusted_package(finished_run, tmp_path, callable_):
    from mlplab.errors import CheckpointError
    from mlplab.trained import load_trained

    target = tmp_path / "target.ckpt"
    _evil_pickle(target)
    path = tampered(finished_run, tmp_path, "data.augment", CALLABLES[callable_](target))
    with pytest.raises(CheckpointError, match=r"names data\.augment\._target_=.*refused") as err:
        load_trained(path)
    assert "\n" not in str(err.value)
    assert not target.with_suffix(".ran").exists() and not (tmp_path / "written").exists()


def test_the_trainer_reads_checkpoints_as_data_whatever_it_is_asked(tmp_path):
    path = tmp_path / "pickled.ckpt"
    _evil_pickle(path)
    with pytest.raises(pickle.UnpicklingError):  # Lightning asks weights_only=False for URLs
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not path.with_suffix(".ran").exists()


def test_eval_refuses_a_trusted_function_through_the_cli(finished_run, tmp_path):
    target = tmp_path / "created-by-the-checkpoint"
    path = tampered(finished_run, tmp_path, "module.net", CALLABLES["mlplab-function"](target))
    assert_refused(["eval.py"], "ckpt_path", path, "module.net", tmp_path / "out")
    assert not target.exists()


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        ("model.weights_only", False, "switches a safety off"),
        ("data.allow_pickle", True, "switches a safety off"),
        ("model.activation", "${oc.env:HOME}", "an interpolation"),
        ("data.name", "${project:train.train}", "an interpolation"),
    ],
)
def test_a_stored_config_switches_no_safety_off(finished_run, tmp_path, where, value, said):
    from mlplab.errors import CheckpointError
    from mlplab.trained import load_trained

    path = tampered(finished_run, tmp_path, where, value)
    with pytest.raises(CheckpointError, match=f"{said}.*refused, nothing was built"):
        load_trained(path)


def test_what_the_config_groups_build_is_allowed(finished_run):
    """Every target of every option of conf/ (and a secret from the environment) passes the
    stored-config check: the rule refuses what a tampered file adds, never what mlplab wrote."""
    import yaml

    from mlplab.stored import check_targets

    targets = set()
    for path in (PROJECT / "conf").rglob("*.yaml"):
        text = path.read_text().replace("${project:", "mnist_mlp.").replace("}", "")
        for line in text.splitlines():
            if "_target_:" in line and not line.lstrip().startswith("#"):
                targets.add(line.split("_target_:")[1].split("#")[0].strip().rstrip(","))
    targets -= {t for t in targets if t.startswith("mlplab.") and "hydra" in t}
    hydra_callbacks = yaml.safe_load((PROJECT / "conf" / "train.yaml").read_text())["hydra"]
    hydra_callbacks = {c["_target_"] for c in hydra_callbacks["callbacks"].values()}
    built = sorted(t for t in targets if t and t not in hydra_callbacks and "," not in t)
    assert len(built) > 40, built
    for target in built:
        check_targets({"x": {"_target_": target}}, "test")
    check_targets({"logger": {"api_key": "${oc.env:WANDB_API_KEY}"}}, "test")


def test_a_users_own_package_is_trusted_once_declared(finished_run, tmp_path):
    from mlplab.stored import check_targets, trust_packages

    config = {"callbacks": {"mine": {"_target_": "fault_points.PauseAt"}}}  # lib/tests' own
    with pytest.raises(Exception, match=r"fault_points\.PauseAt, outside the packages"):
        check_targets(config, "test")
    trust_packages(["fault_points"])
    try:
        check_targets(config, "test")
    finally:
        trust_packages([])


def test_an_unsafe_pickle_gets_safe_advice(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "obj": uuid.uuid4()}, path)
    proc = run_command("eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}")
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
        return run_command(*args, cwd=project, env={"PYTHONPATH": str(project / "src")})

    done = command("train.py", "debug=smoke", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    _rename(project, "oldproj", "newproj")
    # Nothing to list in trusted_packages: the project's own package is trusted as it is now.
    done = command("eval.py", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
