"""scikit-learn yardsticks on the same split as mlplab's tabular experiments.

For each experiment, the data module is built from the experiment's own config (same table,
same seeded split, same preprocessing fitted on the training split), then a linear model
(LogisticRegression / Ridge) and HistGradientBoosting are fitted on the training split and
scored on the test split, with the metric mlplab reports.

    python benchmarks/tabular_yardsticks.py [experiment ...]   (default: both tabular ones)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]


def yardsticks(experiment: str) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, r2_score

    from mlplab.runs import register_resolvers

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiments",
        nargs="*",
        default=["tabular_classification", "tabular_regression"],
        help="experiments to measure (default: tabular_classification tabular_regression)",
    )
    for experiment in parser.parse_args().experiments:
        yardsticks(experiment)


if __name__ == "__main__":
    main()
