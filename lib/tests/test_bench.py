"""The benchmark script runs end to end and its setups really compute the same thing."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mlplab.testing import PROJECT, real_data_dir


@pytest.mark.slow
def test_bench_times_the_same_training_in_four_setups():
    mnist = real_data_dir("mnist")
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench.py",
            "--data-dir",
            str(mnist),
            "--epochs",
            "2",
            "--rounds",
            "2",
            "--train-size",
            "10000",  # the setups agree on any split: a fifth of the lesson's is quicker
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = dict(
        re.findall(r"^(plain|mlplab|lightning-bare|classic) .*?([\d.]+)%", result.stdout, re.M)
    )
    assert set(rows) == {"plain", "mlplab", "lightning-bare", "classic"}
    # Same seed, data order and updates: the plain loop, mlplab and bare Lightning agree exactly.
    assert rows["plain"] == rows["mlplab"] == rows["lightning-bare"]
    assert float(rows["plain"]) > 50.0  # it learned (chance: 10%; ~70% after 2 short epochs)
    # Each ratio is reported with one value per round.
    for ratio in (
        "mlplab / plain",
        "lightning-bare / plain",
        "mlplab / lightning-bare",
        "classic / mlplab",
    ):
        line = next(line for line in result.stdout.splitlines() if line.startswith(ratio))
        per_round = re.search(r"\(rounds: ([\d. ]+)\)", line).group(1).split()
        assert len(per_round) == 2 and all(float(r) > 0 for r in per_round)
    assert re.search(r"python train\.py --help\s+[\d.]+ s", result.stdout)


def test_bench_rejects_a_single_epoch():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--data-dir", ".", "--epochs", "1"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--epochs must be at least 2" in result.stderr


@pytest.mark.slow
def test_table_bench_times_three_setups_each_in_its_own_process():
    result = subprocess.run(
        [sys.executable, "benchmarks/table_bench.py", "--rows", "4000", "--epochs", "2"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(
        r"^  (plain|lightning-bare|mlplab) +([\d.]+) s/epoch .* ([\d]+) MB", result.stdout, re.M
    )
    assert [r[0] for r in rows] == ["plain", "lightning-bare", "mlplab"], result.stdout
    assert all(float(seconds) > 0 and int(mb) > 100 for _, seconds, mb in rows)


@pytest.mark.slow
def test_serving_bench_measures_predict_and_onnxruntime():
    mnist = real_data_dir("mnist")
    result = subprocess.run(
        [sys.executable, "benchmarks/serving.py", "--data-dir", str(mnist), "--repeat", "20"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for setup in ("plain", "mlplab", "predict.py"):
        assert re.search(rf"^  {re.escape(setup)} +[\d,]+ images/s", result.stdout, re.M)
    assert re.search(r"batch +1: pytorch [\d.]+ ms, onnxruntime [\d.]+ ms", result.stdout)
    assert re.search(r"batch 256: pytorch [\d.]+ ms, onnxruntime [\d.]+ ms", result.stdout)


@pytest.mark.slow
def test_memory_bench_measures_each_size_in_its_own_process():
    result = subprocess.run(
        [sys.executable, "benchmarks/memory_bench.py", "--rows", "20000", "200000"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(
        r"^\| ([\d,]+) \| (\d+) MB \| (-?\d+) MB \| ([\d.]+) MB \|$", result.stdout, re.M
    )
    assert [r[0] for r in rows] == ["20,000", "200,000"], result.stdout
    # A mid-epoch checkpoint holds the network, the metrics' states and at most 15 batches
    # of 1024 unmeasured outputs (0.8 MB): not the 70 steps (3.6 MB) of the larger table.
    assert all(float(r[3]) < 1.2 for r in rows), result.stdout


@pytest.mark.slow
def test_pruning_bench_runs_one_search_with_and_without_the_median_pruner():
    result = subprocess.run(
        [
            sys.executable, "benchmarks/pruning_bench.py", "--trials", "4", "--epochs", "3",
            "--pruners", "none", "{name:median,n_startup_trials:1}", "--args", "debug=smoke",
        ],
        cwd=PROJECT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.findall(
        r"^\| `(none|\{name:median.*\})` \| 4 \| (\d+) \| (\d+) \|", result.stdout, re.M
    )
    # without a pruner first and last (the same seeded search: the same epochs), between them
    assert [pruner for pruner, _, _ in found] == [
        "none", "{name:median,n_startup_trials:1}", "none"
    ], result.stdout  # fmt: skip
    rows = {pruner: (int(pruned), int(epochs)) for pruner, pruned, epochs in found}
    assert rows["none"] == (0, 12) and found[0] == found[2]  # 4 trials of 3 epochs, none pruned
    assert "The sweep without a pruner, first and last: " in result.stdout
    pruned, epochs = rows["{name:median,n_startup_trials:1}"]
    assert (epochs < 12) == (pruned > 0)  # a pruned trial trains fewer epochs
    assert "{name:median,n_startup_trials:1}: epochs " in result.stdout
    beyond = re.findall(
        r"^\| `[^`]+` \| 4 \| \d+ \| \d+ \| \d+ \| \d+ \| \d+ \| (-?[\d.]+) \|",
        result.stdout,
        re.M,
    )
    assert len(beyond) == 3, result.stdout  # what a trial costs beyond its fit, measured
