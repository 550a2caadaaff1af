"""Lightning's Trainer arguments through the real command line: each run's metrics.json,
report.md, printed summary and csv/metrics.csv agree with each other and with what Lightning
did (its step and epoch counters, the rows it logged)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest

from mlplab.record import training_sentence
from mlplab.speedups import skip_unused_batch_hooks
from mlplab.testing import comparable, run_command, run_python

# Bundled digits, 10 training batches of 64 an epoch, 5 validation batches, 10 test batches.
SMALL = [
    "logger=csv",
    "data.train_size=640",
    "data.batch_size=64",
    "data.eval_batch_size=100",
    "callbacks.progress_bar.refresh_rate=1000",
]


def train(run_dir: Path, *overrides: str) -> tuple[object, dict]:
    """``python train.py`` into ``run_dir`` (DDP in processes of its own, as it runs); the
    process and its metrics.json (or {})."""
    ddp = any(o.startswith(("trainer=ddp", "trainer.strategy=ddp")) for o in overrides)
    command = run_python if ddp else run_command
    proc = command("train.py", *SMALL, *overrides, f"hydra.run.dir={run_dir}")
    path = run_dir / "metrics.json"
    return proc, json.loads(path.read_text()) if path.exists() else {}


def csv_rows(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def assert_outputs_agree(proc, run_dir: Path, m: dict) -> None:
    """metrics.json, the CSV Lightning's logger wrote, the summary and report.md: one story."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = m["history"]
    assert len(history) == m["epochs_trained"]
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    if history:
        assert history[-1]["step"] == m["steps"]
    if m["stop_reason"] == "fast_dev_run":
        assert not (run_dir / "csv" / "metrics.csv").exists()
    else:
        assert_csv_agrees(run_dir, m)
    # The printed summary and the report say the same facts.
    sentence = training_sentence(m)
    assert sentence in proc.stdout
    assert f"test accuracy {100 * m['test/acc']:.2f}%" in proc.stdout
    report = (run_dir / "report.md").read_text()
    assert sentence in report
    for row in history:
        assert f"\n| {row['epoch']}" in report
    if m["test_examples"] != m["split_sizes"]["test"]:
        assert f"tested on {m['test_examples']:,} of the" in report


def assert_csv_agrees(run_dir: Path, m: dict) -> None:
    """The rows Lightning's CSV logger wrote are the history's, epoch by epoch."""
    history = m["history"]
    rows = csv_rows(run_dir)
    # Training rows: one per epoch, with the epoch's logged loss.
    train_rows = [r for r in rows if "train/loss" in r]
    assert len(train_rows) == len(history)
    for row, logged in zip(history, train_rows, strict=True):
        assert logged["epoch"] == row["epoch"] - 1
        assert math.isclose(logged["train/loss"], row["train/loss"], rel_tol=1e-6)
    # Validation: a history row has val values exactly when a validation ran in its epoch,
    # and they are that epoch's last validation's.
    val_rows: dict[int, dict] = {}
    for r in rows:
        if "val/loss" in r:
            val_rows[int(r["epoch"])] = r
    for row in history:
        logged = val_rows.get(int(row["epoch"]) - 1)
        if logged is None:
            assert "val/loss" not in row, row
        else:
            assert math.isclose(logged["val/loss"], row["val/loss"], rel_tol=1e-6)
    test_rows = [r for r in rows if "test/acc" in r]
    assert len(test_rows) == 1
    assert math.isclose(test_rows[0]["test/acc"], m["test/acc"], rel_tol=1e-6)


def validations(run_dir: Path) -> list[int]:
    """The epoch (1 = first) of each validation run the CSV logger recorded."""
    return [int(r["epoch"]) + 1 for r in csv_rows(run_dir) if "val/loss" in r]


# case id -> (overrides, expected stop reason, extra check of (run_dir, metrics, proc))
CASES = {
    "fast_dev_run": (  # Lightning turns the loggers off for it: no CSV
        ["trainer.fast_dev_run=true"],
        "fast_dev_run",
        None,
    ),
    "val_check_interval": (
        ["trainer.max_epochs=2", "trainer.val_check_interval=0.5"],
        "max_epochs",
        lambda d, m, p: validations(d) == [1, 1, 2, 2],
    ),
    "check_val_every_n_epoch": (
        ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2"],
        "max_epochs",
        lambda d, m, p: (
            validations(d) == [2, 4]
            and ["val/loss" in r for r in m["history"]] == [False, True, False, True]
        ),
    ),
    "accumulate_grad_batches": (
        ["trainer.max_epochs=2", "trainer.accumulate_grad_batches=4"],
        "max_epochs",
        # 10 batches an epoch in steps of 4: 3 optimizer steps (the last one of 2 batches).
        lambda d, m, p: m["steps"] == 6,
    ),
    "gradient_clip_val": (
        ["trainer.max_epochs=1", "trainer.gradient_clip_val=0.5"],
        "max_epochs",
        lambda d, m, p: m["steps"] == 10,
    ),
    "max_steps": (
        ["trainer.max_epochs=5", "trainer.max_steps=15"],
        "max_steps",
        # Stopped in the middle of epoch 2, before its validation.
        lambda d, m, p: (
            m["steps"] == 15
            and m["epochs_trained"] == 2
            and "val/loss" not in m["history"][1]
            and "trainer.max_steps=15, in epoch 2" in p.stdout
        ),
    ),
    "limit_batches_fractions": (
        [
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=0.5",
            "trainer.limit_val_batches=0.4",
            "trainer.limit_test_batches=0.3",
        ],
        "max_epochs",
        lambda d, m, p: m["steps"] == 5 and m["test_examples"] == 300,
    ),
    "limit_batches_counts": (
        [
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=2",
        ],
        "max_epochs",
        lambda d, m, p: m["steps"] == 3 and m["test_examples"] == 200,
    ),
    "bf16_mixed": (["trainer.max_epochs=1", "trainer.precision=bf16-mixed"], "max_epochs", None),
    "deterministic": (["trainer.max_epochs=1", "trainer.deterministic=true"], "max_epochs", None),
    "profiler": (
        ["trainer.max_epochs=1", "trainer.profiler=simple"],
        "max_epochs",
        lambda d, m, p: (
            (d / "fit-profile.txt").is_file()
            and (d / "test-profile.txt").is_file()
            and "fit-profile.txt" in p.stdout
            and "run_training_epoch" in (d / "fit-profile.txt").read_text()
        ),
    ),
    "no_sanity_check": (
        ["trainer.max_epochs=1", "trainer.num_sanity_val_steps=0"],
        "max_epochs",
        None,
    ),
    "no_checkpointing": (
        ["trainer.max_epochs=2", "trainer.enable_checkpointing=false"],
        "max_epochs",
        lambda d, m, p: (
            m["tested_weights"] == "last"
            and m["tested_epoch"] == 2
            and not list(d.glob("checkpoints/*.ckpt"))
        ),
    ),
    "no_progress_bar": (
        ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"],
        "max_epochs",
        lambda d, m, p: "Epoch 0" not in p.stderr,
    ),
    "early_stopping_under_min_epochs": (
        [
            "trainer.max_epochs=8",
            "trainer.min_epochs=4",
            "callbacks.early_stopping.patience=0",
            "+callbacks.early_stopping.min_delta=10",
        ],
        "early_stopping",
        # Patience 0 with an impossible min_delta asks to stop after epoch 1; min_epochs=4
        # keeps training to epoch 4, and the record says epoch 4.
        lambda d, m, p: m["epochs_trained"] == 4 and m["stopped_epoch"] == 4,
    ),
    "overfit_batches": (
        [
            "trainer.max_epochs=20",
            "trainer.overfit_batches=1",
            "optimizer=adam",
            "optimizer.lr=0.003",
            "regularization=none",
            "callbacks.early_stopping=null",
        ],
        "max_epochs",
        # The same batch every epoch: it is memorized (the loss falls by far more than noise).
        lambda d, m, p: (
            m["history"][-1]["train/loss"] < 0.3 * m["history"][0]["train/loss"]
            and "as large as the training set" not in p.stdout
        ),
    ),
}


# The fast suite runs these; the rest of the matrix runs in make test-all.
FAST = {"check_val_every_n_epoch", "max_steps", "limit_batches_fractions", "no_checkpointing"}


@pytest.mark.parametrize(
    "case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES]
)
def test_trainer_argument(tmp_path: Path, case: str) -> None:
    overrides, reason, check = CASES[case]
    run_dir = tmp_path / "run"
    proc, m = train(run_dir, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert m["stop_reason"] == reason
    assert_outputs_agree(proc, run_dir, m)
    if check is not None:
        assert check(run_dir, m, proc)


def test_fast_dev_run_raises_no_alarm(tmp_path: Path) -> None:
    _, m = train(tmp_path / "run", "trainer.fast_dev_run=true")
    checks = [f["check"] for f in m["doctor"]]
    assert checks == ["too_few_steps"], checks
    assert m["steps"] == 1 and m["tested_weights"] == "last"


def test_doctor_sees_the_real_loss_under_accumulation(tmp_path: Path) -> None:
    """The doctor's step losses are the batches' own (not Lightning's loss / 4), one per
    optimizer step, and every epoch has its gradient norms; its state is a few numbers."""
    import torch

    run_dir = tmp_path / "run"
    proc, _ = train(run_dir, "trainer.max_epochs=2", "trainer.accumulate_grad_batches=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    doctor = next(v for k, v in state["callbacks"].items() if k.startswith("TrainingDoctor"))
    assert doctor["steps_per_epoch"] == [3, 3]
    # The spike watch's window holds the 6 steps: the first step's loss of an untrained net
    # is near ln(10), not a quarter of it.
    assert 1.8 < doctor["spikes"]["recent"][0] < 3.0
    assert all(len(norms) == 3 for norms in doctor["grad_norms"])  # 3 weight layers, each epoch


REFUSED = {
    "trainer.max_epoch=3": "trainer.max_epoch is not a Trainer argument; did you mean max_epochs?",
    "experiment=doesnotexist": "experiment=doesnotexist is not an option of experiment",
    "optimzer=adam": "optimzer is not a config key; did you mean optimizer?",
    "data.bath_size=3": "data.bath_size is not a config key; did you mean data.batch_size?",
    "+trainer.max_epochs=3": "trainer.max_epochs is already a config key",
    "trainer.strategy=ddp_spawn": "trainer.strategy=ddp_spawn trains in spawned",
    "trainer.default_root_dir=/tmp/x": "trainer.default_root_dir is set by mlplab",
    "trainer.profiler=fancy": "trainer.profiler=fancy is not a profiler",
    "trainer.limit_val_batches=0.1": "You requested to check 0.1 of the `val_dataloader`",
}


@pytest.mark.parametrize("override", list(REFUSED))
def test_refused_in_one_line(tmp_path: Path, override: str) -> None:
    run_dir = tmp_path / "run"
    message = "error: " + REFUSED[override]
    proc = run_command("train.py", *SMALL, override, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "metrics.json").exists()


def test_extending_a_finished_run_equals_a_longer_run(tmp_path: Path) -> None:
    """ckpt_path=<run> trainer.max_epochs=3 trains a finished 2-epoch run on to epoch 3 in
    its own dir and CSV (every epoch once), with the metrics of a run started with 3."""
    short, long = tmp_path / "short", tmp_path / "long"
    proc, _ = train(short, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = run_command("train.py", f"ckpt_path={short}")
    assert again.returncode == 2 and "is finished" in again.stderr, again.stderr[-2000:]
    changed = run_command("train.py", f"ckpt_path={short}", "optimizer.lr=0.5")
    assert changed.returncode == 2 and "optimizer.lr=0.5 would change it" in changed.stderr
    extended = run_command("train.py", f"ckpt_path={short}", "trainer.max_epochs=3")
    assert extended.returncode == 0, extended.stderr[-3000:]
    proc, reference = train(long, "trainer.max_epochs=3")
    assert proc.returncode == 0
    m = json.loads((short / "metrics.json").read_text())
    assert m["epochs_trained"] == 3 and m["stop_reason"] == "max_epochs"
    assert_outputs_agree(extended, short, m)
    drop = {"best_checkpoint"}
    assert {k: v for k, v in comparable(m).items() if k not in drop} == {
        k: v for k, v in comparable(reference).items() if k not in drop
    }


@pytest.mark.slow
def test_ddp_with_accumulation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, m = train(
        run_dir, "trainer=ddp_cpu", "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2"
    )
    assert m["world_size"] == 2
    assert m["stop_reason"] == "max_epochs"
    # 10 batches of 64 shared by 2 ranks: 5 an epoch each, in steps of 2: 3 steps an epoch.
    assert m["steps"] == 6
    assert_outputs_agree(proc, run_dir, m)


@pytest.mark.slow
def test_multirun_with_ddp_is_one_sweep(tmp_path: Path) -> None:
    """Rank 1 of each job runs that job (not its own copy of the sweep): one launch, one
    summary, and each job a DDP run of 2 processes."""
    sweep_dir = tmp_path / "sweep"
    proc = run_python(
        "train.py",
        "-m",
        *SMALL,
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "optimizer=sgd,adam",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("Launching 2 jobs") == 1
    assert output.count("sweep summary") == 1, output[-3000:]
    for job in ("0", "1"):
        m = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert m["world_size"] == 2 and m["epochs_trained"] == 1
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]


def test_callbacks_keep_their_own_batch_hooks_and_lose_only_the_no_ops():
    from lightning.pytorch.demos.boring_classes import BoringModel

    class CountSteps(L.Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_end(self, *args) -> None:
            self.steps += 1

    counter = CountSteps()
    skip_unused_batch_hooks([counter])
    assert counter.on_before_backward is None and counter.on_train_batch_start is None
    assert callable(counter.on_train_batch_end) and callable(counter.on_train_epoch_end)
    trainer = L.Trainer(
        max_steps=5,
        callbacks=[counter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert counter.steps == 5
