"""k-fold cross-validation: the folds partition the training pool; the test split stays."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mlplab.testing import compose_config


def loaded(tmp_path, *overrides: str):
    datamodule = instantiate(compose_config(list(overrides), tmp_path).data)
    datamodule.setup("fit")
    return datamodule


def members(datamodule, split: str) -> set:
    """The split's examples: a table's row numbers, an image's pixels."""
    if hasattr(datamodule, "rows"):  # tables are standardized per fold: compare row numbers
        return set(datamodule.rows[split].tolist())
    x = datamodule.splits[split][0]
    return {tuple(r) for r in x.reshape(len(x), -1).tolist()}


@pytest.mark.parametrize("data", ["wine", "mnist_5k"])
def test_five_folds_partition_the_pool_and_keep_the_test_split(tmp_path, data):
    folds = [loaded(tmp_path, f"data={data}", "data.folds=5", f"data.fold={i}") for i in range(5)]
    plain = loaded(tmp_path, f"data={data}")
    pool = members(plain, "train") | members(plain, "val")
    vals = [members(d, "val") for d in folds]
    assert set().union(*vals) == pool  # every pool example validates once ...
    assert sum(len(v) for v in vals) == len(pool)  # ... and only once
    for d, val in zip(folds, vals, strict=True):
        assert members(d, "train") == pool - val
        assert members(d, "test") == members(plain, "test")  # never touched
        # Stratified: each class's share of the fold is its share of the pool (within 1).
        y_val, y_all = d.splits["val"][1], torch.cat([plain.splits[s][1] for s in ("train", "val")])
        expected = torch.bincount(y_all) / 5
        assert (torch.bincount(y_val, minlength=len(expected)) - expected).abs().max() <= 1


def test_a_fold_outside_the_folds_is_refused(tmp_path):
    with pytest.raises(Exception, match=r"data\.fold=5 is not allowed: must be one of 0\.\.4"):
        loaded(tmp_path, "data=wine", "data.folds=5", "data.fold=5")
