"""Data sets as whole tensors: the base class a project's data module subclasses, and the
data modules for a user's own table and image folders."""

from mlplab.data.datamodule import Arrays, TensorDataModule
from mlplab.data.download import fetch
from mlplab.data.idx import IDX_FILES, read_idx
from mlplab.data.image_folder import ImageFolderDataModule
from mlplab.data.table import TableDataModule

__all__ = [
    "IDX_FILES",
    "Arrays",
    "ImageFolderDataModule",
    "TableDataModule",
    "TensorDataModule",
    "fetch",
    "read_idx",
]
