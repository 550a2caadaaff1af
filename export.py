"""Export a trained model for serving: ``python export.py ckpt_path=<run dir> format=onnx``."""

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


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(cfg, "mlplab.export:export_command", validate=False)


if __name__ == "__main__":
    entry_point(main, "export")  # Hydra's errors as one line; see mlplab.cli
