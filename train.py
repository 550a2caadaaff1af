"""Train the MLP: ``python train.py [group=option] [key=value]``; sweep with ``-m``.

Examples:
    python train.py                                   # offline default: bundled MNIST digits
    python train.py experiment=lesson data.data_dir=path/to/mnist
    python train.py -m optimizer=sgd,adam regularization.dropout=0.0,0.3
"""

import sys

try:
    import hydra
    from mlplab.cli import entry_point, run_task  # light: torch and Lightning load only when valid
except ModuleNotFoundError as missing:  # run outside the project's environment
    print(
        f"error: {missing.name} is not installed for {sys.executable}: run make install, "
        "then run this with .venv/bin/python (or activate .venv)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | list[float | None] | None:
    metrics = run_task(cfg, ".train:train")  # src/<package>/train.py
    # What a sweeper (e.g. Optuna) optimizes: one metric, or a list (a multi-objective study).
    wanted = cfg.optimized_metric
    return [metrics.get(m) for m in wanted] if OmegaConf.is_list(wanted) else metrics.get(wanted)


if __name__ == "__main__":
    entry_point(main, "train")  # Hydra's errors as one line; see mlplab.cli
