"""Data sets as whole tensors, and the data modules that serve them."""

from mlplab.data.datamodule import BundledMnistDataModule, IdxDataModule, TensorDataModule

__all__ = ["BundledMnistDataModule", "IdxDataModule", "TensorDataModule"]
