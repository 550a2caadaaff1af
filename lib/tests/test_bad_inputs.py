"""Bad input, table-driven: one clear line, a non-zero exit, and nobody else's outputs touched.

Each case runs the real command line (in this process: mlplab.testing.run_command). A run
finished before the table starts is hashed file by file, and must be byte-identical after
every case.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mnist_mlp.data import IDX_FILES

from mlplab.testing import PROJECT, idx_bytes, run_command, tiny_idx_dataset


def cli(*args: str) -> subprocess.CompletedProcess:
    """A script's command line, in this process; Python's own options (``-c``, ``-S``) in a
    new one."""
    if args[0].endswith(".py"):
        return run_command(*args, env={"HYDRA_FULL_ERROR": "0"})
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("earlier")
    result = cli("train.py", "debug=smoke", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def table_run(tmp_path_factory, bad_files) -> Path:
    """A table model trained on table_ok (features a, b, city)."""
    run_dir = tmp_path_factory.mktemp("table_run")
    result = cli(*TABLE, f"data.path={bad_files['table_ok']}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, earlier_run) -> dict[str, Path]:
    """Broken data folders and checkpoints, each with exactly one thing wrong."""
    root = tmp_path_factory.mktemp("bad")
    good = tiny_idx_dataset()
    broken = {
        "truncated": (IDX_FILES["train_images"], good[IDX_FILES["train_images"]][:500]),
        "bad_magic": (
            IDX_FILES["train_labels"],
            gzip.compress(b"\x00\x00\x07\x01" + (60).to_bytes(4, "big") + bytes(60)),
        ),
        "count_mismatch": (IDX_FILES["train_labels"], idx_bytes(np.arange(50) % 10)),
    }
    paths = {}
    for name, (filename, content) in broken.items():
        folder = root / name
        folder.mkdir()
        for f, data in good.items():
            (folder / f).write_bytes(content if f == filename else data)
        paths[name] = folder
    tables = {
        "table_ok": "a,b,city,label\n"
        + "".join(f"{i},{i % 3},{'xy'[i % 2]},{'pq'[i % 2]}\n" for i in range(40)),
        "table_header_only": "a,b,label\n",
        "table_one_class": "a,b,label\n" + "".join(f"{i},{i},same\n" for i in range(40)),
        "table_inf": "a,b,label\n"
        + "".join(f"{i},{'inf' if i == 5 else i},{i % 2}\n" for i in range(40)),
        "table_inf_target": "a,b,label\n"
        + "".join(f"{i},{i},{'-inf' if i in (6, 9) else i * 0.5}\n" for i in range(40)),
        "table_bad_split": "a,label,part\n"
        + "".join(f"{i},{i % 2},{'dev' if i == 3 else 'train'}\n" for i in range(40)),
        "table_tiny": "a,label\n1,x\n2,y\n3,x\n",
        "table_many_classes": "a,label\n" + "".join(f"{i},c{i}\n" for i in range(1500)),
        "table_no_targets": "a,b,label\n" + "".join(f"{i},{i},\n" for i in range(40)),
        "table_stray_strings": "a,b,label\n"
        + "".join(f"{i},{'?' if i == 7 else i * 0.5},{'pq'[i % 2]}\n" for i in range(60)),
        "table_id_column": "a,user,label\n"
        + "".join(f"{i},u{i:04d},{'pq'[i % 2]}\n" for i in range(80)),
        "table_without_b": "a,city,label\n"
        + "".join(f"{i},{'xy'[i % 2]},{'pq'[i % 2]}\n" for i in range(40)),
    }
    for name, text in tables.items():
        (root / f"{name}.csv").write_text(text)
        paths[name] = root / f"{name}.csv"
    import pandas as pd

    nested = pd.DataFrame({"a": range(40), "tags": [[i, i + 1] for i in range(40)]})
    nested["label"] = ["pq"[i % 2] for i in range(40)]
    nested.to_parquet(root / "nested.parquet")
    paths["table_nested"] = root / "nested.parquet"
    (root / "empty.csv").write_bytes(b"")
    paths["table_empty"] = root / "empty.csv"
    (root / "garbage.ckpt").write_bytes(b"this is not a checkpoint")
    paths["garbage_ckpt"] = root / "garbage.ckpt"
    torch.save({"state_dict": {}}, root / "foreign.ckpt")
    paths["foreign_ckpt"] = root / "foreign.ckpt"
    # An mlplab checkpoint whose weights are of another architecture (hidden 64 instead of 256).
    checkpoint = torch.load(earlier_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["net.layers.0.weight"] = torch.zeros(64, 784)
    checkpoint["state_dict"]["net.layers.0.bias"] = torch.zeros(64)
    torch.save(checkpoint, root / "other_arch.ckpt")
    paths["other_arch_ckpt"] = root / "other_arch.ckpt"
    # A checkpoint of a 3-class network, evaluated on 10-class digits.
    checkpoint = torch.load(earlier_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["num_outputs"] = 3
    weights = checkpoint["state_dict"]
    for name in [n for n in weights if n.startswith("net.") and weights[n].shape[0] == 10]:
        weights[name] = weights[name][:3].clone()  # the output layer: 3 classes
    torch.save(checkpoint, root / "three_classes.ckpt")
    paths["three_classes_ckpt"] = root / "three_classes.ckpt"
    # A diverged run's checkpoint: NaN weights.
    checkpoint = torch.load(earlier_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["net.layers.0.weight"][0, 0] = float("nan")
    torch.save(checkpoint, root / "nan_weights.ckpt")
    paths["nan_weights_ckpt"] = root / "nan_weights.ckpt"
    (root / "digits.idx").write_bytes(idx_bytes(np.zeros((4, 28, 28))))
    paths["digits_idx"] = root / "digits.idx"
    # A spreadsheet saved as .xlsx (a zip archive), and one renamed to .csv.
    import zipfile

    with zipfile.ZipFile(root / "sheet.xlsx", "w") as book:
        book.writestr("xl/workbook.xml", "<workbook/>")
    paths["sheet_xlsx"] = root / "sheet.xlsx"
    (root / "sheet_renamed.csv").write_bytes((root / "sheet.xlsx").read_bytes())
    paths["sheet_renamed"] = root / "sheet_renamed.csv"
    # A config folder of the user's with a YAML syntax error on its line 2.
    (root / "conf_extra" / "data").mkdir(parents=True)
    (root / "conf_extra" / "data" / "broken.yaml").write_text("path: x.csv\n  target: y\n")
    paths["conf_extra"] = root / "conf_extra"
    return paths


SMOKE = ("train.py", "debug=smoke")
TABLE = (*SMOKE, "data=table", "data.target=label")
MNIST = (*SMOKE, "data=mnist", "data.train_size=50", "data.val_size=10", "data.download=false")

# id: (command line, {placeholder}s filled from bad_files, expected start of the last line, exit)
CASES = {
    "dropout_out_of_range": (
        (*SMOKE, "regularization.dropout=1.0"),
        "error: regularization.dropout=1.0 is not allowed: must be a number in [0, 1)",
        2,
    ),
    "negative_lr": (
        (*SMOKE, "optimizer.lr=-0.1"),
        "error: optimizer.lr=-0.1 is not allowed: must be a number > 0",
        2,
    ),
    "zero_batch_size": (
        (*SMOKE, "data.batch_size=0"),
        "error: data.batch_size=0 is not allowed: must be an integer >= 1",
        2,
    ),
    "zero_hidden_units": (
        (*SMOKE, "model.hidden_sizes=[256,0]"),
        "error: model.hidden_sizes=[256, 0] is not allowed",
        2,
    ),
    "negative_patience": (
        (*SMOKE, "callbacks.early_stopping.patience=-1"),
        "error: callbacks.early_stopping.patience=-1 is not allowed: must be an integer >= 0",
        2,
    ),
    "zero_epochs": (
        (*SMOKE, "trainer.max_epochs=0"),
        "error: trainer.max_epochs=0 is not allowed",
        2,
    ),
    "unknown_report_pictures": (
        (*SMOKE, "callbacks.report.pictures=some"),
        "error: callbacks.report.pictures=some: choose all, best (a study's best trial only) "
        "or none",
        2,
    ),
    "negative_seed": (
        (*SMOKE, "seed=-1"),
        "error: seed=-1 is not allowed: must be an integer in [0, 2**32)",
        2,
    ),
    "gpu_without_a_gpu": (
        ("train.py", "trainer.accelerator=gpu", "trainer.max_epochs=1"),
        "error: trainer.accelerator=gpu but torch sees no CUDA GPU here",
        2,
    ),
    "seed_not_a_number": (
        (*SMOKE, "seed=abc"),
        "error: seed='abc' is not allowed: must be an integer",
        2,
    ),
    "unknown_activation": (
        (*SMOKE, "model.activation=gelu"),
        "error: model.activation='gelu' is not allowed: must be one of relu, sigmoid, tanh",
        2,
    ),
    "split_does_not_fit": (
        (*SMOKE, "data.train_size=4000"),
        "error: data.train_size=4000 + data.val_size=500 does not fit the 4000 non-test examples",
        2,
    ),
    "truncated_gzip": (
        (*MNIST, "data.data_dir={truncated}"),
        "error: cannot read {truncated}/train-images-idx3-ubyte.gz",
        2,
    ),
    "wrong_idx_magic": (
        (*MNIST, "data.data_dir={bad_magic}"),
        "error: {bad_magic}/train-labels-idx1-ubyte.gz is not an IDX file",
        2,
    ),
    "image_label_count_mismatch": (
        (*MNIST, "data.data_dir={count_mismatch}"),
        "error: mnist train: 60 images but 50 labels in {count_mismatch}",
        2,
    ),
    "no_data_no_network": (
        (*SMOKE, "data=mnist", "data.data_dir={root}/absent", "data.mirrors=[http://127.0.0.1:9/]"),
        "error: mnist not found in {root}/absent: expected train-images-idx3-ubyte.gz",
        2,
    ),
    "unwritable_data_dir": (
        (*SMOKE, "data=mnist", "data.data_dir=/proc/mlplab-mnist"),
        "error: mnist not found in /proc/mlplab-mnist",
        2,
    ),
    "diverging_loss": (
        (*SMOKE, "optimizer.lr=1e12", "trainer.limit_train_batches=20"),
        "error: training loss became nan at step 3 of epoch 1; the step before it had loss",
        2,
    ),
    "missing_checkpoint": (
        ("eval.py", "ckpt_path={root}/nope.ckpt"),
        "error: checkpoint {root}/nope.ckpt does not exist",
        2,
    ),
    "garbage_checkpoint": (
        ("eval.py", "ckpt_path={garbage_ckpt}"),
        "error: cannot load checkpoint {garbage_ckpt}:",
        2,
    ),
    "foreign_checkpoint": (
        ("train.py", "ckpt_path={foreign_ckpt}"),
        "error: {foreign_ckpt} holds no mlplab config: it was not written by mlplab's train.py",
        2,
    ),
    "other_architecture": (
        ("eval.py", "ckpt_path={other_arch_ckpt}"),
        "error: {other_arch_ckpt} does not fit this model: net.layers.0.bias: checkpoint (64,) vs "
        "model (256,); net.layers.0.weight: checkpoint (64, 784) vs model (256, 784)",
        2,
    ),
    "eval_on_data_with_other_classes": (
        ("eval.py", "ckpt_path={three_classes_ckpt}"),
        "error: {three_classes_ckpt} was trained on inputs (1, 28, 28) with 3 outputs, but "
        "mnist_5k has inputs (1, 28, 28) and 10 outputs",
        2,
    ),
    "eval_data_dir_for_bundled_data": (
        ("eval.py", "ckpt_path={earlier}", "data_dir={root}"),
        "error: data_dir={root} does not apply: the checkpoint's data set (mnist_5k) is not "
        "read from a folder",
        2,
    ),
    "table_missing_file": (
        (*TABLE, "data.path={root}/nope.csv"),
        "error: data.path={root}/nope.csv does not exist",
        2,
    ),
    "table_empty_file": (
        (*TABLE, "data.path={table_empty}"),
        "error: cannot read {table_empty}: No columns to parse from file",
        2,
    ),
    "table_header_only": (
        (*TABLE, "data.path={table_header_only}"),
        "error: {table_header_only} holds no rows",
        2,
    ),
    "table_no_such_target": (
        (*TABLE, "data.path={table_ok}", "data.target=price"),
        "error: data.target='price' is not a column of {table_ok}; its columns: a, b, city, label",
        2,
    ),
    "table_text_feature_not_declared_categorical": (
        (*TABLE, "data.path={table_ok}", "data.categorical=[]"),
        "error: feature column 'city' is not numeric (e.g. 'y') and not in data.categorical",
        2,
    ),
    "table_target_with_one_class": (
        (*TABLE, "data.path={table_one_class}"),
        "error: target 'label' has one class ('same') in the training split",
        2,
    ),
    "table_regression_target_not_numeric": (
        (*TABLE, "data.path={table_ok}", "data.task=regression", "module=regressor"),
        "error: data.task=regression but target 'label' is not numeric",
        2,
    ),
    "table_infinite_value": (
        (*TABLE, "data.path={table_inf}"),
        "error: column 'b' holds infinite values in the ",
        2,
    ),
    "table_regression_target_infinite": (
        (*TABLE, "data.path={table_inf_target}", "data.task=regression", "module=regressor"),
        "error: target 'label' holds infinite values in 2 rows of {table_inf_target} (data rows "
        "7, 10, counting from 1 after the header): fix or remove them",
        2,
    ),
    "table_unknown_split_value": (
        (*TABLE, "data.path={table_bad_split}", "data.split_column=part"),
        "error: data.split_column='part' holds ['dev']: each row must say train, val or test",
        2,
    ),
    "table_split_left_empty": (
        (*TABLE, "data.path={table_tiny}"),
        "error: the val split is empty (3 rows in all)",
        2,
    ),
    "table_too_many_classes": (
        (*TABLE, "data.path={table_many_classes}", "data.task=classification"),
        # 1,050 of the 1,500 labels are in the training split
        "error: target 'label' has 1050 classes (> 1000): almost surely a regression target",
        2,
    ),
    "table_target_without_values": (
        (*TABLE, "data.path={table_no_targets}"),
        "error: target 'label' has no value in any of the 40 rows",
        2,
    ),
    "table_list_column": (
        (*TABLE, "data.path={table_nested}"),
        "error: column 'tags' of {table_nested} holds ndarray values",
        2,
    ),
    "table_numbers_with_stray_strings": (
        (*TABLE, "data.path={table_stray_strings}"),
        "error: column 'b' is numeric but for 1 values such as '?'",
        2,
    ),
    "table_id_column": (
        (*TABLE, "data.path={table_id_column}"),
        "error: column 'user' has another value in every one of its",
        2,
    ),
    "eval_on_a_table_without_a_trained_column": (
        (
            "eval.py",
            "ckpt_path={table_run}",
            "data=table",
            "data.path={table_without_b}",
            "data.target=label",
        ),
        "error: column 'b', a feature the model was trained on, is not in {table_without_b}",
        2,
    ),
    "model_too_large_for_memory": (
        (*SMOKE, "model.hidden_sizes=[100000000]"),
        "error: out of memory building or training the model",
        2,
    ),
    "a_100000_character_value": (
        (*SMOKE, "seed=" + "9" * 100_000),
        "error: cannot compose the config: ValueError: Exceeds the limit (4300 digits)",
        2,
    ),
    "unwritable_run_dir": (
        (*SMOKE,),  # hydra.run.dir is set to a path under a file below
        "error: cannot create ",
        2,
    ),
    "regression_table_with_the_classifier": (
        (*SMOKE, "data=diabetes", "module=classifier"),
        "error: the data is a regression task but module=classifier: use module=regressor",
        2,
    ),
    "regression_with_a_classification_loss_and_metrics": (
        (*SMOKE, "data=diabetes", "module=regressor", "loss=cross_entropy", "metrics=accuracy"),
        "error: a regression task has no class labels, but loss (CrossEntropy) and metrics.acc "
        "need them: use loss=mse (or mae, huber) and metrics=regression",
        2,
    ),
    "cnn_on_a_table": (
        (*SMOKE, "data=wine", "model=cnn"),
        "error: model=cnn needs images (channels, height, width), but this data has "
        "input_shape (13,): use model=mlp for tables",
        2,
    ),
    "transfer_without_checkpoint": (
        (*SMOKE, "model=pretrained"),
        "error: model.checkpoint is required: the run dir or checkpoint of an MLP trained before",
        2,
    ),
    "transfer_from_missing_checkpoint": (
        (*SMOKE, "model=pretrained", "model.checkpoint={root}/nope.ckpt"),
        "error: checkpoint {root}/nope.ckpt does not exist",
        2,
    ),
    "freezing_a_layer_that_does_not_exist": (
        (*SMOKE, "model=pretrained", "model.checkpoint={earlier}", "model.freeze=[5]"),
        "error: model.freeze=[5] is not allowed: hidden layers are numbered 1 to 2",
        2,
    ),
    "scratch_comparison_without_pretrained_model": (
        (*SMOKE, "compare_from_scratch=true"),
        "error: compare_from_scratch=true compares a pretrained network with a fresh one",
        2,
    ),
    "augmentation_without_a_target": (
        (*SMOKE, "+data.augment.max_shift=3"),
        "error: data.augment={{'max_shift': 3}} is not allowed: must be null or an augmentation",
        2,
    ),
    "constructor_refuses_a_value": (
        (*SMOKE, "model.dropout=1.5"),
        "error: model (mnist_mlp.model.MLP) cannot be built: ValueError: dropout probability has "
        "to be between 0 and 1, but got 1.5",
        2,
    ),
    "table_from_a_spreadsheet": (
        (*TABLE, "data.path={sheet_xlsx}"),
        "error: {sheet_xlsx} is a spreadsheet workbook, not a CSV file: save the sheet as CSV",
        2,
    ),
    "table_from_a_spreadsheet_named_csv": (
        (*TABLE, "data.path={sheet_renamed}"),
        "error: {sheet_renamed} is a spreadsheet workbook, not a CSV file",
        2,
    ),
    "yaml_syntax_error_in_a_config": (
        ("train.py", "--config-dir={conf_extra}", "data=broken"),
        "error: {conf_extra}/data/broken.yaml, line 2, column 9: YAML syntax error",
        2,
    ),
    "export_to_the_mlflow_run_of_a_checkpoint_trained_without_one": (
        ("export.py", "ckpt_path={earlier}", "mlflow_run=trained"),
        "error: mlflow_run=trained: the checkpoint names no MLflow run (trained without "
        "logger=mlflow); give the run's id: mlflow_run=<run id>",
        2,
    ),
    "export_to_an_mlflow_run_that_is_no_id": (
        ("export.py", "ckpt_path={earlier}", "mlflow_run=../../etc"),
        "error: mlflow_run=../../etc is no MLflow run id (32 hex digits) nor trained",
        2,
    ),
    "export_to_mlflow_as_torchscript": (
        ("export.py", "ckpt_path={earlier}", "format=torchscript", "mlflow_run=trained"),
        "error: mlflow_run logs an ONNX model: format=onnx, not torchscript",
        2,
    ),
    "eval_override_it_never_reads": (
        ("eval.py", "ckpt_path={earlier}", "+model.hidden_sizes=[64]"),
        "error: +model.hidden_sizes=[64]: eval.py reads no model.hidden_sizes",
        2,
    ),
    "predict_with_nan_weights": (
        ("predict.py", "ckpt_path={nan_weights_ckpt}", "input={digits_idx}"),
        "error: {nan_weights_ckpt} holds NaN or infinite weights (net.layers.0.weight)",
        2,
    ),
    "unknown_key_by_its_long_name": (
        (*SMOKE, "optimizer.learning_rate=0.01"),
        "error: optimizer.learning_rate is not a config key; did you mean optimizer.lr?",
        2,
    ),
    "added_key_the_constructor_does_not_take": (
        (*SMOKE, "+optimizer.learning_rate=0.01"),
        "error: optimizer.learning_rate is not an argument of torch.optim.SGD: did you mean "
        "optimizer.lr? (it takes lr, momentum,",
        2,
    ),
    "optimizers_own_check_of_a_value": (
        (*SMOKE, "optimizer=momentum", "optimizer.momentum=-1"),
        "error: optimizer (torch.optim.SGD) cannot be built: ValueError: Invalid momentum value",
        2,
    ),
    "a_search_without_multirun": (
        (*SMOKE, "hparams_search=optuna"),
        "error: this config chooses a sweeper (StudySweeper), which searches only in a "
        "multirun: add -m",
        2,
    ),
    "a_path_with_a_space_unquoted": (
        (*TABLE, "data.path={root}/my", "table.csv"),
        "error: cannot parse the overrides: 'table.csv' is no key=value; if it belongs to "
        "'data.path={root}/my', quote the value with its space: 'data.path={root}/my table.csv'",
        2,
    ),
    "unknown_group_option": (
        (*SMOKE, "optimizer=rmsprop"),
        "error: optimizer=rmsprop is not an option of optimizer: choose one of adagrad, adam",
        2,
    ),
}
# Refused before any logger or checkpoint starts: the run dir gets no W&B run, no checkpoint.
NOTHING_STARTED = {
    "dropout_out_of_range",
    "negative_lr",
    "negative_seed",
    "gpu_without_a_gpu",
    "unknown_activation",
    "split_does_not_fit",
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, earlier_run, bad_files, tmp_path, request):
    args, expected, exit_code = CASES[case]
    if "{table_run}" in " ".join(args):
        bad_files = {**bad_files, "table_run": request.getfixturevalue("table_run")}
    if case == "gpu_without_a_gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    places = {k: str(v) for k, v in bad_files.items()} | {
        "root": str(bad_files["garbage_ckpt"].parent),
        "earlier": str(earlier_run),
    }
    before = snapshot(earlier_run)
    run_dir = tmp_path / "run"
    if case == "unwritable_run_dir":  # a run dir inside a file cannot be created
        (tmp_path / "a_file").write_text("")
        run_dir = tmp_path / "a_file" / "run"
    result = cli(*(a.format(**places) for a in args), f"hydra.run.dir={run_dir}")
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(expected.format(**places)), lines[-1][:2000]
    assert "Traceback" not in result.stderr
    assert snapshot(earlier_run) == before
    if case in NOTHING_STARTED:
        started = [p for p in ("wandb", "checkpoints", "csv") if (tmp_path / "run" / p).exists()]
        assert started == []


def test_the_table_covers_at_least_fifteen_bad_inputs():
    assert len(CASES) >= 15
    assert sum(case.startswith("table_") for case in CASES) >= 10  # own tables: issue 14


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(
    tracker, tmp_path, monkeypatch
):
    # The tracker's package hidden as if never installed (a project made without it).
    monkeypatch.setitem(sys.modules, tracker, None)
    done = cli("train.py", f"logger={tracker}", "debug=smoke", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: logger={tracker} needs the {tracker} package: pip install "
        f"'mlplab[{tracker}]' (a project made with tracker {tracker} has it)"
    )


OWN_NETWORK = (  # lib/tests/own_networks.py: a user's CNN, with none of the MLP's keys
    "model._target_=own_networks.TinyConvNet",
    *(f"~model.{key}" for key in ("hidden_sizes", "activation", "dropout", "init", "compile")),
)


def test_a_network_given_inputs_it_cannot_take_is_one_line_naming_both(tmp_path):
    done = run_command(
        "train.py", *SMOKE[1:], "data=wine", *OWN_NETWORK, f"hydra.run.dir={tmp_path}",
        env={"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: model (own_networks.TinyConvNet) cannot take the data's inputs of shape "
        "[16, 13] (batch first): Expected 3D (unbatched) or 4D (batched) input to conv2d, but "
        "got input of size: [16, 13]; choose a network built for the data's input shape"
    )


@pytest.mark.parametrize("script", ["train.py", "eval.py", "predict.py", "export.py"])
def test_an_entry_point_outside_the_environment_says_how_to_get_in(script):
    done = cli("-S", script)  # -S: no site-packages, as a python3 without the project's
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"error: hydra is not installed for {sys.executable}: run make install, then run "
        "this with .venv/bin/python (or activate .venv)"
    )


def test_a_project_target_needs_one_package_in_src(tmp_path):
    # A project whose src/ holds two packages: ${project:...} cannot tell which is meant.
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "conf", project / "conf")
    shutil.copy(PROJECT / "train.py", project / "train.py")
    for package in ("one", "two"):
        (project / "src" / package).mkdir(parents=True)
        (project / "src" / package / "__init__.py").write_text("")
    done = run_command(
        "train.py", "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=project, env={"HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ${project:") and "write the target in full" in last
    assert f"stands for the one package in {project / 'src'} (found: one, two)" in last
