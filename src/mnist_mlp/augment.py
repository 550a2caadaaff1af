"""Augmentations applied to a whole training batch on the training device, never per sample."""

from __future__ import annotations

import torch
from mlplab import buildable
from torch import Tensor


@buildable  # a stored config may build it: an augmentation, not an nn.Module
class RandomShift:
    """Translate each image by its own random offset of up to ``max_shift`` pixels.

    The lesson's augmentation: a digit shifted by a pixel or two is still the same digit, so
    every epoch sees slightly different images. Pixels shifted in from outside are zero (the
    background). One gather over the zero-padded batch does the whole batch at once, on
    whatever device it lives on, with torch's seeded generator: reproducible, and resumed
    runs continue the same random stream (its state travels in the checkpoints).

    Args:
        max_shift: largest shift in pixels, along each axis independently (0 disables it).
    """

    def __init__(self, max_shift: int = 2) -> None:
        if max_shift < 0:
            raise ValueError(f"data.augment.max_shift={max_shift} must be >= 0")
        self.max_shift = max_shift

    def __call__(self, images: Tensor) -> Tensor:
        """``images``: ``(batch, channels, height, width)`` or ``(batch, height, width)``;
        returns shifted copies of the same shape (all channels of an image shift together)."""
        k = self.max_shift
        if k == 0:
            return images
        x = images if images.ndim == 4 else images.unsqueeze(1)
        n, _, height, width = x.shape
        padded = torch.nn.functional.pad(x, (k, k, k, k)).movedim(1, -1)  # (n, h+2k, w+2k, c)
        dy, dx = torch.randint(-k, k + 1, (2, n, 1), device=x.device)
        rows = torch.arange(height, device=x.device) + k - dy  # (n, height)
        cols = torch.arange(width, device=x.device) + k - dx  # (n, width)
        batch = torch.arange(n, device=x.device)[:, None, None]
        shifted = padded[batch, rows[:, :, None], cols[:, None, :]].movedim(-1, 1)
        return shifted if images.ndim == 4 else shifted.squeeze(1)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"
