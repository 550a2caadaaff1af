"""k-fold cross-validation: which examples of the training pool validate in fold ``i``.

The pool is every example that is not in the test split (the official test set, or a
table's test rows): the folds partition it, seeded, stratified by class for classification,
so fold ``i`` validates on one part and trains on the others; the test split is never
touched. ``python train.py -m data.folds=5 data.fold=0,1,2,3,4`` runs all of them, and the
sweep summary aggregates them like seeds.
"""

from __future__ import annotations

import numpy as np

from mlplab.errors import ConfigError


def check_fold(folds: int | None, fold: int) -> None:
    if folds is None:
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"data.folds={folds!r} is not allowed: must be null or an integer >= 2")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(
            f"data.fold={fold!r} is not allowed: must be one of 0..{folds - 1} "
            f"(data.folds={folds}); run them all with -m data.fold=range({folds})"
        )


def fold_split(
    labels: np.ndarray | None, n: int, folds: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` positions in a pool of ``n`` examples for fold ``fold`` of ``folds``:
    stratified by ``labels`` (classification), else plain (regression)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    positions = np.arange(n)
    if labels is not None:
        counts = np.bincount(np.unique(labels, return_inverse=True)[1])
        if counts.min() < folds:
            raise ConfigError(
                f"data.folds={folds}: the smallest class has {counts.min()} examples in the "
                f"pool, fewer than the folds; use data.folds={max(2, int(counts.min()))} or fewer"
            )
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(positions, labels))[fold]
    if n < folds:
        raise ConfigError(f"data.folds={folds} is more than the {n} examples of the pool")
    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(positions))[fold]
