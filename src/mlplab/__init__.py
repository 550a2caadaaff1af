"""mlplab: a PyTorch Lightning + Hydra template for the classic MNIST MLP."""

__version__ = "0.1.0"
