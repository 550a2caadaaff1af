"""Downloads against a real HTTP server on 127.0.0.1: good files accepted, bad ones refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from mnist_mlp.data import IDX_FILES, IdxDataModule

from mlplab.data.download import download_file, fetch
from mlplab.errors import DataError


def test_good_file_is_downloaded_and_verified(mirror, tmp_path):
    url, md5, _ = mirror
    name = IDX_FILES["train_labels"]
    dest = tmp_path / "data" / name
    download_file(url + name, dest, md5[name])
    assert hashlib.md5(dest.read_bytes()).hexdigest() == md5[name]
    assert [p.name for p in dest.parent.iterdir()] == [name]  # no temporary file left behind


def test_corrupted_file_is_rejected_and_nothing_is_left(mirror, tmp_path):
    url, md5, root = mirror
    name = IDX_FILES["train_labels"]
    (root / name).write_bytes(b"corrupted in transit")
    dest = tmp_path / "data" / name
    with pytest.raises(DataError, match="md5 mismatch"):
        download_file(url + name, dest, md5[name])
    assert list(dest.parent.iterdir()) == []


def test_fetch_falls_back_to_the_next_mirror(mirror, tmp_path):
    url, md5, _ = mirror
    name = IDX_FILES["test_labels"]
    dead = "http://127.0.0.1:9/"  # discard port: connection refused
    path = fetch(name, tmp_path, [dead, url], md5[name])
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5[name]


def test_datamodule_downloads_missing_files_then_trains_on_them(mirror, tmp_path):
    url, md5, _ = mirror
    dm = IdxDataModule(
        name="tiny",
        data_dir=str(tmp_path / "tiny"),
        md5=md5,
        mirrors=[url],
        train_size=50,
        val_size=10,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.split_sizes() == {"train": 50, "val": 10, "test": 20}
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == sorted(IDX_FILES.values())


def test_no_files_and_no_network_gives_one_actionable_line(tmp_path):
    dm = IdxDataModule(
        name="mnist", data_dir=str(tmp_path / "nowhere"), mirrors=["http://127.0.0.1:9/"]
    )
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "\n" not in message
    assert str((tmp_path / "nowhere").resolve()) in message
    assert all(name in message for name in IDX_FILES.values())
    assert "data=mnist_5k" in message


def test_download_disabled_reports_missing_files(tmp_path):
    dm = IdxDataModule(name="mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match=r"download=false"):
        dm.setup("fit")


def test_existing_local_files_are_used_without_network(mirror, tmp_path):
    _, md5, root = mirror
    dm = IdxDataModule(
        name="local", data_dir=str(root), md5=md5, mirrors=[], train_size=50, val_size=10
    )
    dm.setup("fit")
    assert dm.num_outputs == 10
    assert Path(root).exists()
