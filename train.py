"""Train the MLP: ``python train.py [group=option] [key=value]``; sweep with ``-m``.

Examples:
    python train.py                                   # offline default: bundled MNIST digits
    python train.py experiment=lesson data.data_dir=path/to/mnist
    python train.py -m optimizer=sgd,adam regularization.dropout=0.0,0.3
"""

import hydra
from omegaconf import DictConfig

from mlplab.cli import run_task  # light: torch and Lightning load only once the config is valid
from mlplab.speedups import exit_without_teardown


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_task(cfg, "mlplab.train:train")
    return metrics.get(cfg.optimized_metric)  # what a sweeper (e.g. Optuna) optimizes


if __name__ == "__main__":
    exit_without_teardown(main)  # skips ~0.7 s of interpreter teardown: see mlplab.speedups
