"""Your images from class folders: ``data=images data.path=<folder>``.

The layout of torchvision's ``ImageFolder`` and Keras's ``image_dataset_from_directory``: one
subfolder per class, named after it, holding that class's images (PNG, JPEG, BMP, WebP).
Every image is decoded once, by the decoder predict.py uses (:mod:`mlplab.data.images`:
EXIF orientation, 16-bit, transparency), into one uint8 array; the training data are then
tensors like MNIST's (:class:`~mlplab.data.TensorDataModule`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlplab.data.datamodule import Arrays, TensorDataModule
from mlplab.data.images import IMAGE_SUFFIXES, UnreadableImage, read_image, unreadable
from mlplab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Memory the split tensors take per pixel value: the uint8 array decoded, and the float32
# tensors (4 bytes) made of it, both alive while the splits are built.
BYTES_PER_VALUE = 5


class ImageFolderDataModule(TensorDataModule):
    """Images in class folders, decoded once into tensors.

    Args:
        path: the folder holding one subfolder per class.
        test_path: a folder with the same class subfolders holding the test images; ``None``
            takes a stratified, seeded ``test_size`` of ``path`` as the test split.
        channels: 1 (grayscale) or 3 (RGB): every image is converted to it.
        image_size: ``[height, width]`` (or one number for both) every image is resized to
            (bilinear); ``None``: the size of the images, which must then all have it.
        test_size: the test split taken from ``path`` when there is no ``test_path``: a
            fraction of each class, or a count of images in all.
        val_size: the validation split taken from the rest: a count, or a fraction.
        bad_files: ``error`` (a file that is no image stops the run, naming it) or ``skip``
            (skipped, and counted in one line).
        max_memory_gb: refuse, before decoding, a data set whose tensors would need more;
            ``None``: the memory this machine has available.
        example: ``digits``: if ``path`` does not exist yet, it is first filled with an
            example set (:func:`write_example_images`), so a new project trains offline.
        **kwargs: batch and split options of :class:`TensorDataModule`.
    """

    def __init__(
        self,
        path: str,
        test_path: str | None = None,
        channels: int = 1,
        image_size: int | Sequence[int] | None = None,
        test_size: float | int = 0.15,
        val_size: float | int = 0.15,
        bad_files: str = "error",
        max_memory_gb: float | None = None,
        example: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(val_size=1, **kwargs)  # the real val count is known once scanned
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} is not allowed: must be 1 or 3")
        if bad_files not in ("error", "skip"):
            raise ConfigError(f"data.bad_files={bad_files!r} is not allowed: error or skip")
        self.path = Path(path).expanduser()
        self.test_path = Path(test_path).expanduser() if test_path else None
        self.channels, self.bad_files = channels, bad_files
        self.image_size = _size(image_size)
        self.test_fraction, self.val_fraction = test_size, val_size
        self.max_memory_gb = max_memory_gb
        if example not in (None, *EXAMPLES):
            raise ConfigError(f"data.example={example!r} is not allowed: null or digits")
        self.example = example

    # -- the checkpoint carries the class names: predict.py and export.py need no folder -----
    def state_dict(self) -> dict:
        return {**super().state_dict(), "class_names": self.class_names}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("class_names"):
            self.class_names = [str(c) for c in state_dict["class_names"]]

    def load_arrays(self) -> tuple[Arrays, Arrays]:
        if self.example and not self.path.exists():
            write_example_images(self.path, self.example)
        classes, files = _scan(self.path, "data.path")
        test_files = None
        if self.test_path is not None:
            test_classes, test_files = _scan(self.test_path, "data.test_path")
            if test_classes != classes:
                raise DataError(
                    f"data.test_path={self.test_path} has the classes {test_classes}, "
                    f"data.path the classes {classes}: give both the same class folders"
                )
        everything = files + (test_files or [])
        size = self.image_size or _first_size(everything, self.bad_files == "skip")
        self._check_memory(len(everything), size)
        self.class_names = classes
        x, y = self._decode(everything, size)
        if test_files is not None:
            pool = (x[: len(files)], y[: len(files)])
            test = (x[len(files) :], y[len(files) :])
        else:
            pool, test = _stratified_split(x, y, self.test_fraction, self.split_seed)
        self.val_size = _count(self.val_fraction, len(pool[1]), "data.val_size")
        return pool, test

    def _decode(self, files: list[tuple[Path, int]], size: tuple[int, int]) -> Arrays:
        def one(item: tuple[Path, int]) -> np.ndarray | None:
            resize = self.image_size is not None
            try:
                return read_image(item[0], self.channels, size, resize, "set data.image_size")
            except UnreadableImage as exc:
                if self.bad_files == "skip":
                    return None
                raise UnreadableImage(
                    f"{exc}; to leave such files out: data.bad_files=skip"
                ) from exc

        # One after the other: for small images Python's own work per file dominates, and
        # threads made decoding 10,000 28x28 PNGs 2.6x slower (GIL contention), not faster.
        images = [one(item) for item in files]
        kept = [i for i, image in enumerate(images) if image is not None]
        if len(kept) < len(files):
            log.warning(
                "skipped %d of %d files that are no readable image (data.bad_files=skip)",
                len(files) - len(kept),
                len(files),
            )
            print(f"data: skipped {len(files) - len(kept)} files that are no readable image")
        if not kept:
            raise DataError(f"no readable image in {self.path}")
        x = np.stack([image for image in images if image is not None])
        y = np.asarray([files[i][1] for i in kept], dtype=np.int64)
        names = self.class_names or []  # set before decoding
        lost = sorted(set(range(len(names))) - set(y.tolist()))
        if lost:  # a model would have fewer outputs than the class names say
            raise DataError(
                f"class folder {self.path / names[lost[0]]} has no readable image "
                "(every file was skipped): add readable images or remove the folder"
            )
        return x, y

    def _check_memory(self, count: int, size: tuple[int, int]) -> None:
        need = count * self.channels * size[0] * size[1] * BYTES_PER_VALUE
        have = self.max_memory_gb * 1e9 if self.max_memory_gb is not None else _available()
        if have is not None and need > have:
            raise DataError(
                f"{count:,} images of {self.channels}x{size[0]}x{size[1]} need about "
                f"{need / 1e9:.1f} GB of memory as tensors, more than the {have / 1e9:.1f} GB "
                "available: use a smaller data.image_size, data.channels=1, or fewer images"
            )


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(
            f"data.image_size={list(image_size)} is not allowed: [height, width] or one number"
        )
    return size


EXAMPLES = ("digits",)


def write_example_images(folder: Path, name: str = "digits") -> None:
    """Write an example image set into ``folder`` (new), one subfolder per class: ``digits``
    is scikit-learn's 1,797 bundled 8x8 handwritten digits (no download), one PNG each.

    The set appears whole or not at all: it is written beside ``folder`` and renamed into
    place, and a process that finds ``folder`` written meanwhile by another keeps that one.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        part = Path(tmp) / "set"
        pixels = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
        for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            (part / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(part / str(label) / f"{i:04d}.png")
        try:
            part.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process's finished set: a real failure
                raise
    log.info("wrote the example images (%s, %d) into %s", name, len(pixels), folder)


def _scan(folder: Path, key: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names (the subfolders, sorted) and every ``(file, label)`` under them."""
    if not folder.is_dir():
        raise DataError(
            f"{key}={folder} is not a folder: give a folder with one subfolder per class"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{key}={folder} holds {len(classes)} class folder(s): give one subfolder per "
            "class (at least two), each holding that class's images"
        )
    files = []
    for label, name in enumerate(classes):
        found = sorted(  # nothing hidden: .thumbnails/, .DS_Store, an editor's files
            p
            for p in (folder / name).rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            raise DataError(f"class folder {folder / name} is empty: add its images or remove it")
        files += [(p, label) for p in found]
    others = [p for p, _ in files if not p.name.lower().endswith(IMAGE_SUFFIXES)]
    if others:
        log.info("%d files without an image suffix; each is decoded or reported", len(others))
    return classes, files


def _first_size(files: list[tuple[Path, int]], skip: bool) -> tuple[int, int]:
    """The ``(height, width)`` of the first image, from its header alone; with ``skip``, of
    the first readable one."""
    from PIL import Image, ImageOps

    for path, _ in files:
        try:
            with Image.open(path) as image:
                width, height = ImageOps.exif_transpose(image).size
            return height, width
        except Exception as exc:  # Pillow raises many kinds for a bad file
            if not skip:
                raise UnreadableImage(
                    f"{unreadable(path, exc)}; to leave such files out: data.bad_files=skip"
                ) from exc
    raise DataError(f"no readable image among {len(files)} files")


def _available() -> float | None:
    """Bytes of memory available to this process (Linux), else unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _count(size: float | int, total: int, key: str) -> int:
    """A split size given as a count or a fraction of ``total``, as a count."""
    count = round(size * total) if isinstance(size, float) and 0 < size < 1 else int(size)
    if not 1 <= count < total:
        raise ConfigError(f"{key}={size} leaves no examples: {total} to split")
    return count


def _stratified_split(x: np.ndarray, y: np.ndarray, size: float | int, seed: int):
    """``(pool, test)``: a seeded test split with each class in proportion."""
    from sklearn.model_selection import train_test_split

    count = _count(size, len(y), "data.test_size")
    try:
        pool_idx, test_idx = train_test_split(
            np.arange(len(y)), test_size=count, random_state=seed, stratify=y
        )
    except ValueError as exc:  # a class with a single image cannot be stratified
        raise DataError(f"cannot split a stratified test set: {exc}") from exc
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    return (x[pool_idx], y[pool_idx]), (x[test_idx], y[test_idx])
