"""The template grows from outside: a user's model and metric, with no file of mlplab edited.

What a user of the template does: a config dir of their own (found through
``hydra.searchpath``), a Python module on ``PYTHONPATH``, and the real ``train.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import REPO

USER_CODE = '''
import torch
from lightning import Callback
from torch import nn
from torchmetrics import Metric

from mlplab.data import TensorDataModule
from mlplab.record import RunRecord


class LinearNet(nn.Module):
    """A single linear layer: the smallest model the data contract allows."""

    def __init__(self, input_shape, num_outputs, bias=True):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs, bias=bias)

    def forward(self, x):
        return self.linear(x.flatten(1))


class MeanConfidence(Metric):
    """The mean of the highest softmax probability: how sure the model is."""

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits, target):
        self.total += logits.softmax(1).max(1).values.sum()
        self.count += len(logits)

    def compute(self):
        return self.total / self.count


class SmallDigits(TensorDataModule):
    """scikit-learn's 1,797 8x8 digits, as a user's own image loader: one method."""

    def load_arrays(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images * 16).clip(0, 255).astype("uint8")  # 0..16 -> 0..255
        pool, test = (images[:1500], digits.target[:1500]), (images[1500:], digits.target[1500:])
        return pool, test


class WeightNorm(Callback):
    """A user's callback whose result belongs in the run's outputs."""

    def on_fit_end(self, trainer, pl_module):
        norm = float(sum(p.norm() ** 2 for p in pl_module.parameters()) ** 0.5)
        RunRecord.of(trainer).add(
            "weight_norm", norm, report=["## Weights", "", f"L2 norm {norm:.3f}"],
            console=[f"weight norm {norm:.3f}"], wandb={"weight_norm": norm},
        )
'''

CONFIGS = {
    "model/linear.yaml": """
        _target_: my_project.LinearNet
        bias: true
    """,
    "data/small_digits.yaml": """
        _target_: my_project.SmallDigits
        name: small_digits
        val_size: 300
        batch_size: 32
        shuffle_seed: ${seed}
    """,
    "metrics/confident.yaml": """
        defaults:
          - accuracy
          - _self_
        confidence:
          _target_: my_project.MeanConfidence
    """,
}


def user_run(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """The user's files in ``tmp_path``, then ``train.py`` with their config dir."""
    (tmp_path / "my_project.py").write_text(USER_CODE)
    conf = tmp_path / "my_conf"
    for name, text in CONFIGS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(textwrap.dedent(text))
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            f"hydra.searchpath=[file://{conf}]",
            "logger=csv",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )


def test_a_model_and_a_metric_from_outside_the_package_train_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True)
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
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True)
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
