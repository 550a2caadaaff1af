"""Test a saved checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``."""

import hydra
from mlplab.cli import entry_point, run_task
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(cfg, "mlplab.evaluate:evaluate", validate=False)


if __name__ == "__main__":
    entry_point(main, "eval")  # Hydra's errors as one line; see mlplab.cli
