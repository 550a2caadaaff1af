"""Mini-batches sliced from whole tensors: no per-sample ``__getitem__``, no collate, no workers.

For a data set that fits in memory (all of MNIST is 180 MB as float32) this is what a plain
PyTorch loop does, and it is several times cheaper per step than ``DataLoader`` over a
``TensorDataset``. The sampler exposes ``set_epoch`` so Lightning reshuffles it every epoch,
exactly as it does for a ``DistributedSampler``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


class PermutationSampler:
    """The indices of one epoch for one rank: a seeded permutation (or the identity) of ``n``.

    Every rank draws the same permutation (seed + epoch) and keeps every ``world_size``-th
    index starting at its ``rank``. Training (``shuffle``) pads by wrap-around so all ranks
    take equally many steps, as ``torch.utils.data.DistributedSampler`` does. Evaluation
    (no ``shuffle``) does not pad: each example is measured exactly once across the ranks,
    so val and test metrics under DDP equal the single-process ones (ranks may then run one
    batch more or less; nothing syncs per step).
    """

    def __init__(
        self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.n / self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def indices(self) -> Tensor | None:
        """This rank's indices for the current epoch; ``None`` means ``0..n-1`` in order."""
        if not self.shuffle and self.world_size == 1:
            return None
        if not self.shuffle:
            return torch.arange(self.rank, self.n, self.world_size)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=generator)
        total = len(self) * self.world_size
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        idx = self.indices()
        return iter(range(self.n) if idx is None else idx.tolist())


class TensorBatchLoader:
    """Iterate over ``(x, y)`` mini-batches of whole tensors, in the sampler's order.

    Batches are slices (views, no copy) when the order is the identity, else one gather
    per batch on whatever device the tensors live on.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        sampler: PermutationSampler,
        skip_batches: int = 0,
    ) -> None:
        self.x, self.y, self.batch_size, self.sampler = x, y, batch_size, sampler
        # Batches of the first epoch iterated that were already trained before an interruption.
        self.skip_batches = skip_batches
        # Lightning looks for a sampler's `set_epoch` (and for shuffling) through these two
        # attributes of a DataLoader; ours has a sampler and no batch sampler.
        self.batch_sampler = None

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        skip, self.skip_batches = self.skip_batches, 0
        idx = self.sampler.indices()
        if idx is None:
            for start in range(skip * self.batch_size, len(self.x), self.batch_size):
                end = start + self.batch_size
                yield self.x[start:end], self.y[start:end]
            return
        idx = idx.to(self.x.device)
        for batch in idx.split(self.batch_size)[skip:]:
            yield self.x[batch], self.y[batch]
