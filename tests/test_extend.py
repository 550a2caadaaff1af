"""The template grows from outside: a user's model and metric, with no file of mlplab edited.

What a user of the template does: a config dir of their own (found through
``hydra.searchpath``), a Python module on ``PYTHONPATH``, and the real ``train.py`` (run
in this process: mlplab.testing.run_command).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import torch
from mlplab.testing import PROJECT, run_command

EXAMPLE = PROJECT / "examples" / "my_project"  # the example a user copies: code + configs


def user_run(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """The example's files copied to ``tmp_path`` (a project outside mlplab), then
    ``train.py`` with its config dir."""
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    conf = tmp_path / "conf"
    return run_command(
        "train.py",
        f"hydra.searchpath=[file://{conf}]",
        "logger=csv",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
        env={"PYTHONPATH": str(tmp_path)},
    )


def test_a_model_and_a_metric_from_outside_the_package_train_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    before = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True)
    result = user_run(tmp_path, "model=linear", "metrics=confident")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_params"] == 784 * 10 + 10  # the user's net, sized from the data
    assert 0.5 < metrics["test/acc"] <= 1.0
    assert 0.0 < metrics["test/confidence"] <= 1.0  # the user's metric, per split and epoch
    assert {"train/confidence", "val/confidence"} <= set(metrics["history"][-1])
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/confidence" in header
    assert "`LinearNet` bias True" in (run_dir / "report.md").read_text()
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["net"]["_target_"] == "my_project.LinearNet"
    after = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True)
    assert after.stdout == before.stdout  # no file of mlplab was touched


def test_a_data_module_and_a_callback_from_outside_the_package(tmp_path):
    result = user_run(
        tmp_path,
        "data=small_digits",
        "optimizer=adam",
        "+callbacks.w._target_=my_project.WeightNorm",
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"] == "small_digits"
    assert metrics["split_sizes"] == {"train": 1200, "val": 300, "test": 297}
    assert metrics["num_params"] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10  # 8x8 in
    assert metrics["test/acc"] > 0.5
    # The callback's result is in every output, with no edit of mlplab.
    assert metrics["weight_norm"] > 0 and "weight norm " in result.stdout
    assert "## Weights" in (run_dir / "report.md").read_text()
