"""Headless matplotlib for every picture mlplab writes (no torch import here)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend: renders to files, never opens a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG (atomically) and close ``fig``; return ``path``."""
    if fig.get_layout_engine() is None:  # a figure made with layout="constrained" lays out itself
        fig.tight_layout()
    from mlplab.rundir import atomic_path  # a picture appears whole or not at all

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        pyplot().close(fig)
    return path
