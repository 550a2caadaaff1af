"""Test a saved checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``."""

import hydra
from omegaconf import DictConfig

from mlplab.cli import run_task
from mlplab.speedups import exit_without_teardown


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(cfg, "mlplab.evaluate:evaluate", validate=False)


if __name__ == "__main__":
    exit_without_teardown(main)  # skips ~0.7 s of interpreter teardown: see mlplab.speedups
