"""``data=images``: training on class folders of image files, then predict and export.

Fast cases use scikit-learn's 8x8 handwritten digits written out as PNG files; the slow ones
write real MNIST and Fashion-MNIST (``$MLPLAB_TEST_DATA``) as PNG folders and compare
them with the same images read from their IDX files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mlplab.data.idx import read_idx
from mlplab.testing import real_data_dir, run_command

LETTERS = "abcdefghij"  # class folder names: the class names in every output
FAST = ("trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """scikit-learn's 1,797 digits (8x8) as PNGs, one folder per class, named a to j."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images") / "digits"
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / LETTERS[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(small_digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_command(
        "train.py",
        "data=images",
        f"data.path={small_digits}",
        "logger=csv",
        "trainer.max_epochs=15",
        *FAST,
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_class_folders_train_a_model_named_by_its_folders(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.8  # 1,797 digits of 8x8 pixels
    assert metrics["split_sizes"] == {"train": 1298, "val": 229, "test": 270}
    assert "misclassified.png" in (trained / "report.md").read_text()


def test_predict_and_export_need_no_extra_option(trained, small_digits, tmp_path):
    out = tmp_path / "predict"
    predicted = run_command(
        "predict.py",
        f"ckpt_path={trained}",
        f"input={small_digits / 'c'}",
        f"hydra.run.dir={out}",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    header, *rows = (out / "predictions.csv").read_text().splitlines()
    assert header.split(",")[2:] == [f"prob_{c}" for c in LETTERS]
    assert sum(row.split(",")[1] == "c" for row in rows) > 0.7 * len(rows)
    export = tmp_path / "export"
    exported = run_command(
        "export.py", f"ckpt_path={trained}", "format=onnx", f"hydra.run.dir={export}"
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    spec = json.loads((export / "model" / "model.json").read_text())
    assert spec["class_names"] == list(LETTERS) and spec["input"]["shape"] == ["batch", 1, 8, 8]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("model=cnn", "augment=shift", "data.channels=3"),
        ("data.folds=3", "data.fold=1", "data.image_size=[12,12]"),
    ],
    ids=["cnn_rgb_shift", "kfold_resized"],
)
def test_models_augmentation_and_folds_work_on_folders(small_digits, overrides, tmp_path):
    result = run_command(
        "train.py",
        "debug=smoke",
        "data=images",
        f"data.path={small_digits}",
        *overrides,
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    size = 12 if "data.image_size=[12,12]" in overrides else 8
    channels = 3 if "data.channels=3" in overrides else 1
    import torch

    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert list(state["hyper_parameters"]["input_shape"]) == [channels, size, size]


@pytest.mark.slow
def test_a_separate_test_folder_is_the_test_split(small_digits, tmp_path):
    test = tmp_path / "test"
    for folder in small_digits.iterdir():  # the first 20 of each class
        (test / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:20]:
            (test / folder.name / path.name).write_bytes(path.read_bytes())
    result = run_command(
        "train.py",
        "debug=smoke",
        "data=images",
        f"data.path={small_digits}",
        f"data.test_path={test}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split_sizes"]["test"] == 200


def copy_of(small_digits, tmp_path):
    folder = tmp_path / "digits"
    for source in small_digits.iterdir():
        (folder / source.name).mkdir(parents=True)
        for path in sorted(source.iterdir())[:30]:
            (folder / source.name / path.name).write_bytes(path.read_bytes())
    return folder


def images_run(folder, tmp_path, *overrides):
    return run_command(
        "train.py",
        "debug=smoke",
        "data=images",
        f"data.path={folder}",
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"HYDRA_FULL_ERROR": "0"},
    )


def test_a_corrupt_file_is_named_or_skipped_and_counted(small_digits, tmp_path):
    folder = copy_of(small_digits, tmp_path)
    (folder / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "e" / "notes.txt").write_text("not an image")
    refused = images_run(folder, tmp_path)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot read image ") and "Traceback" not in refused.stderr
    assert ("broken.png" in last) or ("notes.txt" in last)
    assert last.endswith("; to leave such files out: data.bad_files=skip")
    skipped = images_run(folder, tmp_path / "skip", "data.bad_files=skip")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "data: skipped 2 files that are no readable image" in skipped.stdout


def decompression_bomb(path):
    """A PNG whose header says 30,000 x 30,000 pixels (more than Pillow opens): the header
    is all Pillow reads before refusing it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 30_001)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat))
    return path


@pytest.mark.parametrize(
    ("damage", "skip", "expected"),
    [
        ("hidden_folder", False, None),
        ("first_file_no_image", True, "data: skipped 1 files"),
        ("decompression_bomb", False, "more pixels than Pillow decodes safely"),
        pytest.param("decompression_bomb", True, "data: skipped 1 files", marks=pytest.mark.slow),
        ("class_all_unreadable", True, "error: class folder {folder}/c has no readable image"),
    ],
)
def test_damaged_folders_train_around_the_damage_or_say_what_it_is(
    small_digits, tmp_path, damage, skip, expected
):
    folder = copy_of(small_digits, tmp_path)
    if damage == "hidden_folder":  # a viewer's thumbnails and a stray file, hidden
        (folder / "a" / ".thumbnails").mkdir()
        (folder / "a" / ".thumbnails" / "0.png").write_text("not an image")
        (folder / "b" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    elif damage == "first_file_no_image":
        (folder / "a" / "!readme.txt").write_text("sorted first, and no image")
    elif damage == "decompression_bomb":
        decompression_bomb(folder / "d" / "huge.png")
    elif damage == "class_all_unreadable":
        for path in (folder / "c").iterdir():
            path.write_bytes(b"not an image any more")
    result = images_run(folder, tmp_path, *["data.bad_files=skip"] * skip)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if expected is None or expected.startswith("data:"):
        assert result.returncode == 0, result.stderr[-2000:]
        assert expected is None or expected in result.stdout
    else:
        assert result.returncode == 2, result.stderr[-2000:]
        assert expected.format(folder=folder) in result.stderr.strip().splitlines()[-1]


def test_predict_names_a_decompression_bomb_in_one_line(trained, tmp_path):
    bomb = decompression_bomb(tmp_path / "huge.png")
    done = run_command(
        "predict.py", f"ckpt_path={trained}", f"input={bomb}", f"hydra.run.dir={tmp_path / 'p'}"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "more pixels than Pillow decodes safely" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("empty_class", "error: class folder {folder}/c is empty"),
        ("one_class", "error: data.path={folder} holds 1 class folder(s)"),
        ("no_folder", "error: data.path={folder}/nope is not a folder"),
        ("other_size", "is 9x8, not the 8x8 expected: resize the images, or set data.image_size"),
        ("too_large", "images of 1x8x8 need about"),
    ],
)
def test_bad_folders_are_one_line(small_digits, tmp_path, damage, expected):
    folder = copy_of(small_digits, tmp_path)
    overrides = []
    if damage == "empty_class":
        for path in (folder / "c").iterdir():
            path.unlink()
    elif damage == "one_class":
        for name in LETTERS[1:]:
            for path in (folder / name).iterdir():
                path.unlink()
            (folder / name).rmdir()
    elif damage == "no_folder":
        folder = folder / "nope"
    elif damage == "other_size":
        Image.new("L", (9, 8)).save(folder / "a" / "wide.png")
    elif damage == "too_large":
        overrides = ["data.max_memory_gb=0.000001"]
    result = images_run(folder, tmp_path, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert expected.format(folder=folder.parent if damage == "no_folder" else folder) in last
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_png_folders_train_as_well_as_the_same_idx_files(name, tmp_path):
    """The IDX files written out as PNG class folders (train and test): the same images,
    the same seeds and split sizes, the same test accuracy."""
    import time

    source = real_data_dir(name)
    pngs = tmp_path / "pngs"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        for label in range(10):
            (pngs / split / str(label)).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(pngs / split / str(label) / f"{i:05d}.png")
    same = (
        "trainer.max_epochs=2",
        "data.val_size=10000",
        "logger=csv",
        *FAST,
    )
    started = time.perf_counter()
    from_pngs = run_command(
        "train.py",
        "data=images",
        f"data.path={pngs / 'train'}",
        f"data.test_path={pngs / 'test'}",
        *same,
        f"hydra.run.dir={tmp_path / 'png'}",
    )
    png_s = time.perf_counter() - started
    assert from_pngs.returncode == 0, from_pngs.stderr[-3000:]
    from_idx = run_command(
        "train.py",
        f"data={name}",
        f"data.data_dir={source}",
        "data.download=false",
        "data.train_size=50000",
        *same,
        f"hydra.run.dir={tmp_path / 'idx'}",
    )
    assert from_idx.returncode == 0, from_idx.stderr[-3000:]
    png = json.loads((tmp_path / "png" / "metrics.json").read_text())
    idx = json.loads((tmp_path / "idx" / "metrics.json").read_text())
    assert png["split_sizes"] == idx["split_sizes"] == {"train": 50000, "val": 10000, "test": 10000}
    print(f"{name}: PNG {png['test/acc']:.4f} ({png_s:.1f} s) vs IDX {idx['test/acc']:.4f}")
    assert abs(png["test/acc"] - idx["test/acc"]) < 0.01


def test_a_test_split_without_a_mistake_has_a_report_without_misclassified_images(tmp_path):
    for name, value in (("black", 0), ("white", 255)):  # told apart by any pixel
        (tmp_path / "bw" / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((4, 4), value, np.uint8)).save(
                tmp_path / "bw" / name / f"{i}.png"
            )
    run = tmp_path / "run"
    result = run_command(
        "train.py", "data=images", f"data.path={tmp_path / 'bw'}", "data.batch_size=8",
        "optimizer=momentum", "trainer.max_epochs=10", "logger=none", *FAST,
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["test/acc"] == 1.0
    assert not (run / "misclassified.png").exists()
    assert "confusion_matrix.png" in (run / "report.md").read_text()
