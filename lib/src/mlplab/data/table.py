"""Tables (CSV, Parquet, or a pandas data frame) as a data module: ``data=table``.

Rows are examples; one column (or several, for regression) is the target, the others are
features. Preprocessing is fitted on the training split only and travels in checkpoints
(the data module's state), so ``eval.py`` and a resumed run apply the same transform:

- numeric features: missing values filled with the training median, then standardized
  with the training mean and standard deviation;
- categorical features: missing values filled with the most frequent training value, then
  one-hot encoded over the training categories (a category never seen in training is all
  zeros, with a warning naming it);
- the target: rows without one are dropped (with a note); class labels map to indices in
  sorted order, and ``class_names`` are those labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mlplab.data.contract import TASKS, baseline_score
from mlplab.data.datamodule import TensorDataModule
from mlplab.data.folds import fold_split
from mlplab.errors import ConfigError, DataError
from mlplab.instantiate import buildable

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_CLASSES = 1000  # more distinct labels than this is almost surely a regression target
# A numeric target with at most this many distinct integer values is taken as class labels.
MAX_INTEGER_CLASSES = 20


class TableDataModule(TensorDataModule):
    """A table as whole tensors: features ``(N, F)``, targets by task.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.parquet`` file; or ``None`` with ``frame``.
        target: the target column (a list of columns: several regression targets).
        features: the feature columns; ``None``: every other column.
        categorical: the categorical feature columns; ``None``: the non-numeric ones.
        task: ``classification``, ``regression`` or ``auto`` (a non-numeric target, or one
            with at most 20 distinct integer values, is classification; the rule applied is
            printed).
        split_column: a column holding ``train``/``val``/``test`` per row; ``None``: a
            seeded split by ``val_size`` and ``test_size``.
        val_size: validation rows: a count, or a fraction of the table (below 1).
        test_size: test rows, likewise.
        train_size: training rows (count or fraction); ``None``: all the rest.
        missing: ``impute`` (training median / most frequent value) or ``error``.
        frame: the table itself (a ``pandas.DataFrame``), instead of ``path``.
        test_only: every row is a test example (``eval.py`` on a file of its own): needs the
            preprocessing of a trained model (loaded from its checkpoint), and scores all rows.
        **kwargs: name, batch and seed options of :class:`TensorDataModule`.
    """

    def __init__(
        self,
        path: str | None = None,
        target: str | Sequence[str] = "target",
        features: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        task: str = "auto",
        split_column: str | None = None,
        val_size: float = 0.15,
        test_size: float = 0.15,
        train_size: float | None = None,
        missing: str = "impute",
        frame: pd.DataFrame | None = None,
        test_only: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", Path(path).stem if path else "table")
        # The base class's image split sizes do not apply: a table's are in self.sizes.
        super().__init__(val_size=1, train_size=None, **kwargs)
        if task not in ("auto", *TASKS):
            raise ConfigError(
                f"data.task={task!r} is not allowed: must be auto, {', '.join(TASKS)}"
            )
        if missing not in ("impute", "error"):
            raise ConfigError(f"data.missing={missing!r} is not allowed: must be impute or error")
        if path is None and frame is None:
            raise ConfigError("data.path is required: the CSV or Parquet file to train on")
        self.path, self.frame = (Path(path).expanduser() if path else None), frame
        self.targets = [target] if isinstance(target, str) else list(target)
        self.features = list(features) if features is not None else None
        self.categorical = list(categorical) if categorical is not None else None
        # The task as configured; ``self.task`` becomes the one in force once set up.
        self.requested_task, self.task = task, task
        self.split_column, self.missing = split_column, missing
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.preprocessing: dict[str, Any] = {}  # fitted on the training split; checkpointed
        self.fingerprint: dict[str, Any] | None = None  # of the table read (set up)
        self.test_only = test_only

    # -- the table ----------------------------------------------------------------------------
    def _read(self) -> pd.DataFrame:
        if self.frame is not None:
            return self.frame.copy()
        assert self.path is not None  # a path or a frame: the constructor refuses neither
        return read_table(self.path, "data.path")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        table = self._read()
        where = self.path or "the data frame"
        missing_cols = [c for c in self.targets if c not in table.columns]
        if missing_cols:
            raise DataError(
                f"data.target={missing_cols[0]!r} is not a column of {where}; its columns: "
                f"{', '.join(map(str, table.columns))}"
            )
        refuse_nested(table, where)
        refuse_infinite_targets(table, self.targets, where)
        self.fingerprint = fingerprint(table)  # a resumed run checks it is the same table
        unlabeled = table[self.targets].isna().any(axis=1)
        if unlabeled.all():
            raise DataError(
                f"target {self.targets[0]!r} has no value in any of the {len(table)} rows of "
                f"{where}: choose the column to predict with data.target=..."
            )
        if unlabeled.any():
            log.warning("dropped %d rows without a target value", int(unlabeled.sum()))
            table = table[~unlabeled].reset_index(drop=True)
        features = self.features or [
            c for c in table.columns if c not in self.targets and c != self.split_column
        ]
        absent = [
            c
            for c in [*features, *([self.split_column] if self.split_column else [])]
            if c not in table.columns
        ]
        if absent:
            raise DataError(
                f"column {absent[0]!r} is not in {where}; its columns: "
                f"{', '.join(map(str, table.columns))}"
            )
        self.require_features(table, where)  # eval.py on another file
        if not self.preprocessing:
            if self.categorical is None:  # text columns become categories: are they ones?
                for column in features:
                    if not pd.api.types.is_numeric_dtype(table[column]):
                        _refuse_unlikely_category(table[column], column)
            self.preprocessing = {"task": self._task(table)}
        task = self.task = self.preprocessing["task"]
        if task == "classification" and len(self.targets) > 1:
            raise ConfigError("data.target: classification takes one target column")
        if self.test_only and not self.preprocessing.get("features"):
            raise ConfigError(
                "data.test_only=true scores a file with a trained model's preprocessing: "
                "use it through eval.py ckpt_path=... data=table data.path=..."
            )
        parts = {"test": table} if self.test_only else self._split(table)
        if not self.preprocessing.get("features"):
            self.preprocessing.update(self._fit(parts["train"], features, task))
        self.splits = {name: self._transform(part, name) for name, part in parts.items()}
        self.rows = {name: part.index.to_numpy() for name, part in parts.items()}  # file rows
        self.input_shape = (next(iter(self.splits.values()))[0].shape[1],)
        names = self.preprocessing.get("classes")
        self.class_names = names
        self.num_outputs = len(names or []) if task == "classification" else len(self.targets)
        if "train" in parts:
            self._warn_if_full_batch(len(parts["train"]))

    def baseline(self) -> dict[str, float]:
        """The trivial predictor's score per split; without a training split (``test_only``),
        from the training targets' summary stored with the preprocessing."""
        if "train" in self.splits:
            return super().baseline()
        reference = self.preprocessing.get("baseline_reference")
        if reference is None:  # a checkpoint from before the summary was stored
            return {}
        train = torch.tensor(reference)
        return {name: baseline_score(self.task, train, y) for name, (_, y) in self.splits.items()}

    def _task(self, table: pd.DataFrame) -> str:
        """The task: as configured, or detected from the target (the rule is printed)."""
        y = table[self.targets[0]]
        numeric = all(pd.api.types.is_numeric_dtype(table[t]) for t in self.targets)
        if self.requested_task == "regression":
            if not numeric:
                raise DataError(
                    f"data.task=regression but target {self.targets[0]!r} is not numeric "
                    f"(e.g. {y.iloc[0]!r}): use data.task=classification, or a numeric column"
                )
            return "regression"
        if self.requested_task == "classification":
            return "classification"
        integral = numeric and np.all(np.mod(y.to_numpy(dtype=float), 1) == 0)
        distinct = y.nunique()
        if not numeric or (integral and distinct <= MAX_INTEGER_CLASSES and len(self.targets) == 1):
            rule = "not numeric" if not numeric else f"{distinct} distinct integer values"
            task = "classification"
        else:
            rule = f"numeric with {distinct} distinct values"
            task = "regression"
        other = "regression" if task == "classification" else "classification"
        print(
            f"data.task: {task} (target {self.targets[0]!r} is {rule}; "
            f"data.task={other} to override)"
        )
        return task

    def _split(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        if self.split_column:
            values = table[self.split_column].astype(str)
            unknown = sorted(set(values) - set(SPLITS))
            if unknown:
                raise DataError(
                    f"data.split_column={self.split_column!r} holds {unknown[:5]}: each row "
                    "must say train, val or test"
                )
            parts = {s: table[values == s] for s in SPLITS}
        else:
            n = len(table)
            counts = {s: _count(v, n, s) for s, v in self.sizes.items() if v is not None}
            counts.setdefault("train", n - counts["val"] - counts["test"])
            if sum(counts.values()) > n:
                raise ConfigError(
                    f"data.train_size + val_size + test_size = {sum(counts.values())} rows, "
                    f"more than the {n} in the table"
                )
            order = np.random.default_rng(self.split_seed).permutation(n)
            start = 0
            parts = {}
            for s in ("test", "val", "train"):  # test first: fixed whatever the train size
                parts[s] = table.iloc[order[start : start + counts[s]]]
                start += counts[s]
            parts = {s: parts[s] for s in SPLITS}
        if self.folds is not None:  # k-fold over the non-test rows: fold `fold` validates
            pool = pd.concat([parts["train"], parts["val"]])
            y = (
                pool[self.targets[0]].astype(str).to_numpy()
                if self.task == "classification"
                else None
            )
            train, val = fold_split(y, len(pool), self.folds, self.fold, self.split_seed)
            parts = {"train": pool.iloc[train], "val": pool.iloc[val], "test": parts["test"]}
        for s, part in parts.items():
            if part.empty:
                raise ConfigError(
                    f"the {s} split is empty ({len(table)} rows in all): give it rows "
                    "(data.val_size, data.test_size or the split column)"
                )
        return parts

    def _fit(self, train: pd.DataFrame, features: list[str], task: str) -> dict[str, Any]:
        """Preprocessing parameters from the training split only."""
        if self.categorical is not None:
            categorical = list(self.categorical)
            stray = [
                c
                for c in features
                if c not in categorical and not pd.api.types.is_numeric_dtype(train[c])
            ]
            if stray:
                raise DataError(
                    f"feature column {stray[0]!r} is not numeric (e.g. "
                    f"{train[stray[0]].dropna().iloc[0]!r}) and not in data.categorical: "
                    "declare it categorical, or leave it out of data.features"
                )
        else:
            categorical = [c for c in features if not pd.api.types.is_numeric_dtype(train[c])]
        for column in categorical:
            levels = train[column].nunique()
            if levels > MANY_LEVELS:
                log.warning(
                    "categorical column %r has %d levels in the training split: a one-hot code "
                    "of that width; consider leaving it out (data.features=[...])",
                    column,
                    levels,
                )
        numeric = [c for c in features if c not in categorical]
        values = train[numeric].astype(float)
        median = values.median().fillna(0.0)
        filled = values.fillna(median)  # scaled as the model will see them: after imputation
        fitted: dict[str, Any] = {
            "features": features,
            "numeric": numeric,
            "median": median.tolist(),
            "mean": filled.mean().tolist(),
            "std": filled.std(ddof=0).replace(0.0, 1.0).tolist(),
            "categorical": {c: sorted(map(str, train[c].dropna().unique())) for c in categorical},
            "mode": {
                c: str(train[c].mode().iloc[0]) if train[c].notna().any() else ""
                for c in categorical
            },
        }
        if task == "classification":
            labels = train[self.targets[0]]
            classes = sorted(labels.unique(), key=_label_order)
            if len(classes) < 2:
                raise DataError(
                    f"target {self.targets[0]!r} has one class ({classes[0]!r}) in the training "
                    "split: classification needs at least two"
                )
            if len(classes) > MAX_CLASSES:
                raise DataError(
                    f"target {self.targets[0]!r} has {len(classes)} classes (> {MAX_CLASSES}): "
                    "almost surely a regression target; set data.task=regression"
                )
            fitted["classes"] = [str(c) for c in classes]
            # What the baseline needs of the training targets: the majority class ...
            counts = labels.map({c: i for i, c in enumerate(classes)}).value_counts()
            fitted["baseline_reference"] = [int(counts.idxmax())]
        else:  # ... or their mean
            fitted["baseline_reference"] = [train[self.targets].astype(float).mean().tolist()]
        return fitted

    def require_features(self, table: pd.DataFrame, where: Any) -> None:
        """Refuse a table that lacks a column the model was trained on, naming it."""
        gone = [c for c in self.preprocessing.get("features", []) if c not in table.columns]
        if gone:
            raise DataError(
                f"column {gone[0]!r}, a feature the model was trained on, is not in {where} "
                f"({len(gone)} missing); its columns: {', '.join(map(str, table.columns))}"
            )

    def _transform(self, part: pd.DataFrame, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(part, split), self._targets(part, split)

    def encode(self, part: pd.DataFrame, split: str = "input") -> torch.Tensor:
        """The features of ``part`` as the model sees them, ``(N, F)`` float32, with the
        fitted preprocessing: numeric columns imputed and standardized, then each categorical
        column one-hot encoded (the order of ``preprocessing["numeric"]`` and
        ``preprocessing["categorical"]``). Columns other than the features are ignored."""
        p = self.preprocessing
        blocks = []
        if p["numeric"]:
            numeric = _numeric(part, p["numeric"], split)
            gaps = int(numeric.isna().to_numpy().sum())
            if gaps and self.missing == "error":
                raise DataError(
                    f"{gaps} missing numeric values in the {split} split and data.missing=error: "
                    "fill them, or use data.missing=impute"
                )
            if gaps:
                log.warning(
                    "filled %d missing numeric values in the %s split with the training medians",
                    gaps,
                    split,
                )
            filled = numeric.fillna(dict(zip(p["numeric"], p["median"], strict=True)))
            array = (filled.to_numpy() - np.array(p["mean"])) / np.array(p["std"])
            if not np.isfinite(array).all():
                column = p["numeric"][int(np.argwhere(~np.isfinite(array))[0][1])]
                raise DataError(
                    f"column {column!r} holds infinite values in the {split} split: "
                    "remove or clip them"
                )
            blocks.append(array)
        for column, categories in p["categorical"].items():
            raw = part[column]
            gaps = int(raw.isna().sum())
            if gaps and self.missing == "error":
                raise DataError(
                    f"{gaps} missing values of {column!r} in the {split} split and "
                    "data.missing=error: fill them, or use data.missing=impute"
                )
            if gaps:
                log.warning(
                    "filled %d missing values of %r in the %s split with %r",
                    gaps,
                    column,
                    split,
                    p["mode"][column],
                )
            labels = raw.astype(object).where(raw.notna(), p["mode"][column]).astype(str)
            unseen = sorted(set(labels) - set(categories))
            if unseen:
                log.warning(
                    "categories of %r not seen in training, encoded as all zeros in "
                    "the %s split: %s",
                    column,
                    split,
                    ", ".join(unseen[:10]),
                )
            blocks.append(
                (labels.to_numpy()[:, None] == np.array(categories)[None, :]).astype(float)
            )
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(part), 0))
        return torch.from_numpy(x.astype(np.float32))

    def _targets(self, part: pd.DataFrame, split: str) -> torch.Tensor:
        p = self.preprocessing
        if p["task"] == "classification":
            index = {c: i for i, c in enumerate(p["classes"])}
            labels = part[self.targets[0]].map(lambda v: index.get(str(v), -1)).to_numpy()
            if (labels < 0).any():
                unknown = sorted({str(v) for v in part[self.targets[0]] if str(v) not in index})
                raise DataError(
                    f"the {split} split has classes never seen in training: {unknown[:5]}"
                )
            y = torch.from_numpy(labels.astype(np.int64))
        else:
            values = part[self.targets].to_numpy(dtype=np.float32, copy=True)
            y = torch.from_numpy(values[:, 0].copy() if len(self.targets) == 1 else values)
        return y

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "preprocessing": self.preprocessing}
        return {**state, "fingerprint": self.fingerprint} if self.fingerprint else state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        then, now = state_dict.get("fingerprint"), self.fingerprint
        if then and now and then != now:  # resuming a run on a table that changed since
            raise DataError(
                f"{self.path or 'the data frame'} changed since the checkpoint was written "
                f"({_changes(then, now)}): a resumed run trains on the table it started with; "
                "restore that table, or start a new run"
            )
        self.preprocessing = state_dict.get("preprocessing") or self.preprocessing


def fingerprint(table: pd.DataFrame) -> dict[str, Any]:
    """What tells a table from a changed one: its rows, its columns, a hash of its values."""
    digest = int(pd.util.hash_pandas_object(table, index=False).sum()) % 2**62
    return {"rows": len(table), "columns": [str(c) for c in table.columns], "hash": digest}


def _changes(then: dict[str, Any], now: dict[str, Any]) -> str:
    if then.get("rows") != now["rows"]:
        return f"{then.get('rows')} rows then, {now['rows']} now"
    if then.get("columns") != now["columns"]:
        added = sorted(set(now["columns"]) - set(then.get("columns") or []))
        gone = sorted(set(then.get("columns") or []) - set(now["columns"]))
        return f"columns added: {added or 'none'}, gone: {gone or 'none'}"
    return "the same rows and columns, other values"


def refuse_infinite_targets(table: pd.DataFrame, targets: Sequence[str], where: Any) -> None:
    """A target value of plus or minus infinity (a missing one is dropped with its row): one
    line naming the column and its first such rows, before it could make the loss infinite."""
    for column in targets:
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values):
            continue
        rows = np.flatnonzero(np.isinf(values.to_numpy(dtype=float))) + 1
        if len(rows):
            shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
            raise DataError(
                f"target {column!r} holds infinite values in {len(rows)} rows of {where} "
                f"(data rows {shown}, counting from 1 after the header): fix or remove them"
            )


MANY_LEVELS = 1000  # a categorical column with more levels than this gets a warning
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def read_table(path: str | Path, what: str = "the table") -> pd.DataFrame:
    """A CSV, TSV or Parquet file as a data frame; a missing, unreadable or empty file is a
    one-line ``DataError`` (``what`` names the setting that gave the path)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what}={path} does not exist: give the CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix in SPREADSHEET_SUFFIXES or _is_zip(path):
        raise DataError(
            f"{path} is a spreadsheet workbook, not a CSV file: save the sheet as CSV "
            "(or Parquet) and give that file"
        )
    try:
        if suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = _grouped_numbers(pd.read_csv(path, sep="\t" if suffix == ".tsv" else ","))
    except Exception as exc:  # pandas and pyarrow raise many types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read {path}: {first}") from exc
    if table.empty:
        raise DataError(f"{path} holds no rows: a table needs a header and data rows")
    return table


SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
# A number written with thousands separators, as spreadsheets export it: 1,234.5 or -12,000
GROUPED_NUMBER = r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?|[-+]?\d+(?:\.\d*)?|[-+]?\.\d+"


def _is_zip(path: Path) -> bool:
    """Whether the file is a zip archive (what an .xlsx really is), whatever its name."""
    with open(path, "rb") as file:
        return file.read(4) == b"PK\x03\x04"


def _grouped_numbers(table: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a number, some with thousands separators
    ("1,234.5"), as numbers: a spreadsheet's export of a numeric column."""
    for column in table.columns:
        values = table[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values):
            continue
        present = values.dropna().astype(str).str.strip()
        if present.empty or not present.str.contains(",", regex=False).any():
            continue
        if present.str.fullmatch(GROUPED_NUMBER).all():
            table[column] = pd.to_numeric(values.astype(str).str.replace(",", "", regex=False))
            log.info("column %r: numbers with thousands separators, read as numbers", column)
    return table


def _numeric(part: pd.DataFrame, columns: list[str], split: str) -> pd.DataFrame:
    """The numeric feature columns as floats; a value that is no number is refused, named."""
    try:
        return part[columns].astype(float)
    except (TypeError, ValueError):
        for column in columns:
            numbers = pd.to_numeric(part[column], errors="coerce")
            bad = part[column][numbers.isna() & part[column].notna()]
            if len(bad):
                raise DataError(
                    f"column {column!r}, numeric in training, holds {len(bad)} values that are "
                    f"no number in the {split} rows, such as {str(bad.iloc[0])[:60]!r}: clean "
                    "them, or leave them empty (a gap is imputed)"
                ) from None
        raise


def refuse_nested(table: pd.DataFrame, where: Any) -> None:
    """A cell holding a list, a dict or an array (Parquet's list and struct columns) is no
    feature or target: refused, naming the column."""
    for column in table.columns:
        if table[column].dtype != object:
            continue
        sample = table[column].dropna()
        nested = sample[sample.map(lambda v: isinstance(v, list | tuple | dict | np.ndarray))]
        if len(nested):
            kind = type(nested.iloc[0]).__name__
            raise DataError(
                f"column {column!r} of {where} holds {kind} values (e.g. "
                f"{str(nested.iloc[0])[:60]}): a table cell must be a number or a category; "
                "flatten it into columns, or leave it out with data.features=[...]"
            )


def _refuse_unlikely_category(values: pd.Series, column: str) -> None:
    """A text column that is almost all numbers (a few stray strings), or that has another
    value in every row (an ID), would become a huge one-hot code: refused, naming it."""
    present = values.dropna()
    if present.empty:
        return
    numbers = pd.to_numeric(present, errors="coerce")
    share = float(numbers.notna().mean())
    if share >= 0.9:
        stray = present[numbers.isna()].iloc[0]
        raise DataError(
            f"column {column!r} is numeric but for {int(numbers.isna().sum())} values such as "
            f"{stray!r} ({share:.0%} are numbers): clean or drop those values (a gap is "
            f"imputed), or declare it categorical with data.categorical=[{column}]"
        )
    if len(present) >= 50 and present.nunique() == len(present):
        raise DataError(
            f"column {column!r} has another value in every one of its {len(present)} "
            f"rows (e.g. {present.iloc[0]!r}): an ID, not a feature; leave it out with "
            f"data.features=[...], or declare it categorical with data.categorical=[{column}]"
        )


def _count(size: float, n: int, split: str) -> int:
    if isinstance(size, float) and 0 < size < 1:
        return round(size * n)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise ConfigError(
        f"data.{split}_size={size!r} is not allowed: must be a fraction in (0, 1) or a row count"
    )


def _label_order(label: Any) -> tuple[int, Any]:
    """Numbers in numeric order, then strings in string order: a stable class index."""
    if isinstance(label, int | float | np.number) and not isinstance(label, bool):
        return (0, float(label))
    return (1, str(label))


@buildable
def sklearn_frame(name: str) -> pd.DataFrame:
    """One of scikit-learn's bundled tables as a data frame with a ``target`` column: no
    download (``wine``: 178 wines, 3 cultivars; ``diabetes``: 442 patients, a disease
    progression score; ``breast_cancer``: 569 tumours, benign or malignant)."""
    from sklearn import datasets

    loaders = {
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
        "breast_cancer": datasets.load_breast_cancer,
    }
    if name not in loaders:
        raise ConfigError(f"data.frame.name={name!r}: choose one of {', '.join(loaders)}")
    bunch = (
        loaders[name](as_frame=True, scaled=False)
        if name == "diabetes"
        else loaders[name](as_frame=True)
    )
    frame = bunch.frame
    if hasattr(bunch, "target_names") and name != "diabetes":
        frame["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    return frame
