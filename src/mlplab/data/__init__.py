"""Data sets as whole tensors, the data modules that serve them, batch augmentations."""

from mlplab.data.augment import RandomShift
from mlplab.data.datamodule import BundledMnistDataModule, IdxDataModule, TensorDataModule
from mlplab.data.image_folder import ImageFolderDataModule

__all__ = [
    "BundledMnistDataModule",
    "IdxDataModule",
    "ImageFolderDataModule",
    "RandomShift",
    "TensorDataModule",
]
