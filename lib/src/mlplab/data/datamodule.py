"""The base of every data module: each split kept as one tensor.

``TensorDataModule`` holds the logic common to every data set: the seeded train/val split,
the majority-class baseline and the tensor-sliced loaders. A subclass (a project's own data
set, :class:`~mlplab.data.TableDataModule`, :class:`~mlplab.data.ImageFolderDataModule`)
only says how to load its arrays (``load_arrays``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor

from mlplab.data.contract import baseline_score
from mlplab.data.folds import check_fold, fold_split
from mlplab.data.loader import PermutationSampler, TensorBatchLoader
from mlplab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]


class TensorDataModule(L.LightningDataModule):
    """Base class: images scaled to [0, 1], ``(N, C, H, W)``, split into train/val/test tensors.

    Provides the data contract (:mod:`mlplab.data.contract`) for a classification data set
    that fits in memory.

    Args:
        name: the data set's name, for reports.
        batch_size: training mini-batch size, per process: under DDP an optimizer step sees
            ``batch_size x processes`` examples, unless ``global_batch``.
        global_batch: split ``batch_size`` among the DDP processes, so that a step sees
            ``batch_size`` examples in all, as in a single-process run.
        eval_batch_size: batch size for validation and test (no gradients, so larger is cheaper).
        train_size: training examples taken from the pool; ``None`` takes all that is left.
        val_size: validation examples taken from the pool (the non-test examples).
        split_seed: seed of the train/val split; fixed so that the split does not change with
            the training seed.
        shuffle_seed: seed of the per-epoch shuffling (epoch ``e`` uses ``shuffle_seed + e``).
        class_names: display names of the classes, index = label.
        augment: transforms a training batch of images ``(batch, C, H, W)`` on the
            training device (e.g. the project's ``RandomShift``); ``None``: none.
            Validation and test batches are never augmented.
        shuffled_label_fraction: fraction of the *training* labels randomly permuted among
            themselves (seeded by ``split_seed``): 1.0 shuffles them all, the classic check that
            a model can only memorize, not generalize, when labels carry no signal.
        folds: k-fold cross-validation (:mod:`mlplab.data.folds`): the non-test pool in
            ``folds`` stratified, seeded parts; ``None``: the fixed train/val split.
        fold: which part validates (0 to ``folds - 1``); the others train.
    """

    task = "classification"

    def __init__(
        self,
        name: str = "data",
        batch_size: int = 128,
        global_batch: bool = False,
        eval_batch_size: int = 1000,
        train_size: int | None = None,
        val_size: int = 10_000,
        split_seed: int = 42,
        shuffle_seed: int = 0,
        class_names: Sequence[str] | None = None,
        augment: Callable[[Tensor], Tensor] | None = None,
        shuffled_label_fraction: float = 0.0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__()
        check_fold(folds, fold)
        self.folds, self.fold = folds, fold
        self.name = name
        if not 0.0 <= shuffled_label_fraction <= 1.0:
            raise ConfigError(
                f"data.shuffled_label_fraction={shuffled_label_fraction} must be in [0, 1]"
            )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.global_batch = global_batch
        self.train_size, self.val_size = train_size, val_size
        self.split_seed, self.shuffle_seed = split_seed, shuffle_seed
        self.class_names = list(class_names) if class_names is not None else None
        self.augment, self.shuffled_label_fraction = augment, shuffled_label_fraction
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.input_shape: tuple[int, ...] = ()
        self.num_outputs = 0
        self._resume_skip_batches = 0

    # -- what a subclass provides -------------------------------------------------------------
    def load_arrays(self) -> tuple[Arrays, Arrays | None]:
        """Return ``(pool, test)``: uint8 images ``(n, *shape)`` and int labels ``(n,)``.

        ``test`` is ``None`` when the data set has no official test split; the subclass then
        carves one out of the pool itself.
        """
        raise NotImplementedError

    # -- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # Lightning calls setup once per stage: load once.
            return
        (x_pool, y_pool), test = self.load_arrays()
        if test is None:
            raise DataError(f"{type(self).__name__} provided no test split")
        n_val = self.val_size
        n_train = len(x_pool) - n_val if self.train_size is None else self.train_size
        if n_val < 1 or n_train < 1 or n_train + n_val > len(x_pool):
            raise ConfigError(
                f"data.train_size={self.train_size} + data.val_size={self.val_size} does not "
                f"fit the {len(x_pool)} non-test examples; each must be >= 1 and their sum "
                f"<= {len(x_pool)}"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(x_pool), generator=generator).numpy()
        train, val = order[:n_train], order[n_train : n_train + n_val]
        if self.folds is not None:  # k-fold: the whole pool, fold `fold` validates
            train, val = fold_split(y_pool, len(y_pool), self.folds, self.fold, self.split_seed)
        y_train = y_pool[train]
        if self.shuffled_label_fraction > 0:
            y_train = _shuffle_some(y_train, self.shuffled_label_fraction, self.split_seed)
        self.splits = {
            "train": _to_tensors(x_pool[train], y_train),
            "val": _to_tensors(x_pool[val], y_pool[val]),
            "test": _to_tensors(*test),
        }
        self._warn_if_full_batch(n_train)
        self.input_shape = tuple(self.splits["train"][0].shape[1:])
        self.num_outputs = int(max(int(y.max()) for _, y in self.splits.values())) + 1
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.num_outputs)]

    def _warn_if_full_batch(self, n_train: int) -> None:
        if self.batch_size >= n_train:
            log.warning(
                "data.batch_size=%d is not smaller than the %d training examples: each epoch "
                "is a single optimizer step",
                self.batch_size,
                n_train,
            )

    def split_sizes(self) -> dict[str, int]:
        return {name: len(y) for name, (_, y) in self.splits.items()}

    def baseline(self) -> dict[str, float]:
        """The trivial predictor's score per split (see ``baseline_score``)."""
        train = self.splits["train"][1]
        return {name: baseline_score(self.task, train, y) for name, (_, y) in self.splits.items()}

    def train_dataloader(self) -> TensorBatchLoader:
        batch_size = self.batch_size
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.global_batch and world_size > 1:
            if batch_size % world_size:
                raise ConfigError(
                    f"data.batch_size={batch_size} does not split among {world_size} processes "
                    "(data.global_batch=true): choose a multiple of the process count"
                )
            batch_size //= world_size
        # overfit_batches trains the same batches every epoch (Lightning makes a DataLoader's
        # sampler sequential for it; this loader is not one, so it is done here).
        overfit = self.trainer is not None and bool(self.trainer.overfit_batches)
        loader = self._loader("train", batch_size, shuffle=not overfit)
        loader.skip_batches, self._resume_skip_batches = self._resume_skip_batches, 0
        return loader

    # A checkpoint taken mid-epoch (Ctrl-C, SIGTERM) records how many batches of the epoch were
    # trained; resuming skips exactly those, in the same seeded order, so nothing is repeated.
    def state_dict(self) -> dict[str, int]:
        done = 0
        if self.trainer is not None and self.trainer.training:
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
            if done >= self.trainer.num_training_batches:
                done = 0  # the epoch is complete: the next one starts from its first batch
        return {"train_batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_skip_batches = int(state_dict.get("train_batches_done", 0))

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        # Here the batch is on the training device: the augmentation runs there, batch-wide.
        if self.augment is None or self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return self.augment(x), y

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> TensorBatchLoader:
        x, y = self.splits[split]
        rank, world_size, device = 0, 1, torch.device("cpu")
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
        # Whole splits live on the training device (all of MNIST is 220 MB): no host-to-device
        # copy per step. Kept in self.splits so the move happens once per device.
        if x.device != device:
            x, y = x.to(device), y.to(device)
            self.splits[split] = (x, y)
        sampler = PermutationSampler(len(y), shuffle, self.shuffle_seed, rank, world_size)
        return TensorBatchLoader(x, y, batch_size, sampler)


def _shuffle_some(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A copy of ``labels`` in which a random ``fraction`` of them are permuted among themselves."""
    rng = np.random.default_rng(seed + 2)  # its own stream: the split does not move with it
    chosen = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    labels = labels.copy()
    labels[chosen] = labels[rng.permutation(chosen)]
    return labels


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """Float32 images ``(N, C, H, W)`` in [0, 1] and int64 labels (torch converts on all cores).

    Gray images ``(N, H, W)`` get their one channel.
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.to(torch.float32).div_(255.0), torch.from_numpy(labels.astype(np.int64))
