"""mlplab: the run machinery of a PyTorch Lightning + Hydra project (see docs/api.md)."""

from typing import Any

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # ``mlplab.predict(checkpoint, data)``, imported when first used: ``import mlplab`` stays
    # light (the command lines check their config before torch loads).
    if name == "buildable":
        from mlplab.instantiate import buildable

        return buildable
    if name == "predict":
        from mlplab.prediction import predict

        return predict
    raise AttributeError(f"module 'mlplab' has no attribute {name!r}")
