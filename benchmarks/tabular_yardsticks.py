"""scikit-learn yardsticks on the same split as mlplab's tabular experiments.

For each experiment, the data module is built from the experiment's own config (same table,
same seeded split, same preprocessing fitted on the training split), then a linear model
(LogisticRegression / Ridge) and HistGradientBoosting are fitted on the training split and
scored on the test split, with the metric mlplab reports.

With ``--folds K``: scikit-learn's ``cross_val_score`` on mlplab's own K folds of the non-test
pool (``data.folds=K``, the same seeded, stratified parts), each fold's preprocessing fitted
on its training part as mlplab does (median imputation, standardization, one-hot, in a
Pipeline); the test split scored by each fold's model. Mean ± std over the folds.

    python benchmarks/tabular_yardsticks.py [experiment ...]   (default: both tabular ones)
    python benchmarks/tabular_yardsticks.py --folds 5 --data wine
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]


def yardsticks(experiment: str) -> dict[str, float]:
    from mlplab.resume import register_resolvers
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, r2_score

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "output_dir=/tmp/unused"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    (x_train, y_train), (x_test, y_test) = (
        (x.numpy(), y.numpy()) for x, y in (datamodule.splits["train"], datamodule.splits["test"])
    )
    if datamodule.task == "classification":
        models = {
            "LogisticRegression": LogisticRegression(max_iter=5000),
            "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
        }
        score, metric = accuracy_score, "test acc"
    else:
        models = {
            "Ridge": Ridge(alpha=1.0),
            "HistGradientBoosting": HistGradientBoostingRegressor(random_state=0),
        }
        score, metric = r2_score, "test R²"
    results = {}
    for name, model in models.items():
        model.fit(x_train, y_train)
        results[name] = float(score(y_test, model.predict(x_test)))
    sizes = {k: len(v[1]) for k, v in datamodule.splits.items()}
    print(f"{experiment} ({datamodule.name}, {sizes}), {metric}:")
    for name, value in results.items():
        print(f"  {name:22s} {value:.4f}")
    return results


def cross_validated(data: str, folds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per model: the K validation scores (``cross_val_score``) and the K test scores."""
    import numpy as np
    from mlplab.resume import register_resolvers
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    register_resolvers()
    modules = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for fold in range(folds):
            overrides = [f"data={data}", f"data.folds={folds}", f"data.fold={fold}"]
            cfg = compose("train", overrides=[*overrides, "output_dir=/tmp/unused"])
            datamodule = instantiate(cfg.data)
            datamodule.setup("fit")
            modules.append(datamodule)
    first = modules[0]
    table = first._read()
    table = table[table[first.targets[0]].notna()].reset_index(drop=True)
    pool = np.sort(np.concatenate([first.rows["train"], first.rows["val"]]))
    where = {row: i for i, row in enumerate(pool)}  # file row -> position in the pool
    cv = [([where[r] for r in m.rows["train"]], [where[r] for r in m.rows["val"]]) for m in modules]
    p = first.preprocessing
    features = [*p["numeric"], *p["categorical"]]
    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             p["numeric"]),
            ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
             OneHotEncoder(handle_unknown="ignore")), list(p["categorical"])),
        ]
    )  # fmt: skip
    x, y = table.loc[pool, features], table.loc[pool, first.targets[0]]
    test = table.loc[first.rows["test"]]
    if first.task == "classification":
        models = {
            "LogisticRegression": LogisticRegression(max_iter=5000),
            "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
        }
        scoring, y, y_test = "accuracy", y.astype(str), test[first.targets[0]].astype(str)
    else:
        models = {
            "Ridge": Ridge(alpha=1.0),
            "HistGradientBoosting": HistGradientBoostingRegressor(random_state=0),
        }
        scoring, y_test = "r2", test[first.targets[0]]
    results = {}
    for name, model in models.items():
        pipeline = make_pipeline(prepare, model)
        val = cross_val_score(pipeline, x, y, cv=cv, scoring=scoring).tolist()
        tests = [
            float(pipeline.fit(x.iloc[tr], y.iloc[tr]).score(test[features], y_test))
            for tr, _ in cv
        ]
        results[name] = (val, tests)
    print(f"{data}: {folds} folds of {len(pool)} non-test rows, {len(test)} test rows, {scoring}:")
    for name, (val, tests) in results.items():
        print(
            f"  {name:22s} val {np.mean(val):.4f} ± {np.std(val, ddof=1):.4f}   "
            f"test {np.mean(tests):.4f} ± {np.std(tests, ddof=1):.4f}"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiments",
        nargs="*",
        default=["tabular_classification", "tabular_regression"],
        help="experiments to measure (default: tabular_classification tabular_regression)",
    )
    parser.add_argument("--folds", type=int, help="cross-validate on mlplab's folds instead")
    parser.add_argument("--data", default="wine", help="the data config to cross-validate")
    args = parser.parse_args()
    if args.folds:
        cross_validated(args.data, args.folds)
        return
    for experiment in args.experiments:
        yardsticks(experiment)


if __name__ == "__main__":
    main()
