"""Predict with a trained model: ``python predict.py ckpt_path=<run dir or .ckpt> input=<path>``."""

import hydra
from mlplab.cli import entry_point, run_task
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_task(cfg, "mlplab.prediction:predict_command", validate=False)


if __name__ == "__main__":
    entry_point(main, "predict")  # Hydra's errors as one line; see mlplab.cli
