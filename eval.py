"""Test a saved checkpoint: ``python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt``."""

import sys

try:
    import hydra
    from mlplab.cli import entry_point, run_task
except ModuleNotFoundError as missing:  # run outside the project's environment
    print(
        f"error: {missing.name} is not installed for {sys.executable}: run make install, "
        "then run this with .venv/bin/python (or activate .venv)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(cfg, "mlplab.evaluate:evaluate", validate=False)


if __name__ == "__main__":
    entry_point(main, "eval")  # Hydra's errors as one line; see mlplab.cli
