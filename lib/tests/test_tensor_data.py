"""The IDX reader on real files, and the tensor loader's sampling, sharding and batching."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from mlplab.data.idx import read_idx
from mlplab.data.loader import PermutationSampler, TensorBatchLoader
from mlplab.errors import DataError
from mlplab.testing import real_data_dir


def test_idx_reader_on_real_mnist():
    data_dir = real_data_dir("mnist")
    images = read_idx(data_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    # Published facts about MNIST: the first training digit is a 5, the first test digit a 7.
    assert labels[0] == 5 and test_labels[0] == 7
    assert images.max() == 255 and images.min() == 0


def test_idx_reader_accepts_uncompressed_files(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = (
        bytes([0, 0, 0x08, 3])
        + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
        + data.tobytes()
    )
    (tmp_path / "x-idx3-ubyte").write_bytes(raw)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte"), data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc"), "bad magic number"),
        (gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc"), "truncated"),
        (b"not gzip at all", "cannot read"),
    ],
    ids=["bad-magic", "truncated", "not-gzip"],  # gzip bytes hold a time stamp: no stable id
)
def test_idx_reader_refuses_corrupt_files(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_sampler_permutes_reproducibly_and_changes_with_the_epoch():
    sampler = PermutationSampler(10, shuffle=True, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(10))
    assert list(PermutationSampler(10, shuffle=True, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(10))


def test_sampler_shards_each_epoch_between_ranks_like_distributed_sampler():
    shards = [
        list(PermutationSampler(11, shuffle=True, seed=5, rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to equal length
    assert set().union(*shards) == set(range(11))


def test_evaluation_shards_hold_each_example_exactly_once():
    # No padding for val/test: a padded copy would be counted twice in the metrics.
    shards = [list(PermutationSampler(11, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 3]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    sampler = PermutationSampler(11, shuffle=False, rank=2, world_size=3)
    assert len(sampler) == len(list(sampler)) == 3


def test_loader_yields_every_example_once_per_epoch_in_batches():
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(10)
    for shuffle in (False, True):
        loader = TensorBatchLoader(
            x, y, batch_size=4, sampler=PermutationSampler(10, shuffle, seed=0)
        )
        batches = list(loader)
        assert len(loader) == len(batches) == 3
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        seen = torch.cat([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(10))
        assert all(torch.equal(bx.squeeze(1).long(), by) for bx, by in batches)
