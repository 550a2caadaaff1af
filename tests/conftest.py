"""Shared fixtures: Hydra composition of the real configs, data locations, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# Real MNIST / Fashion-MNIST IDX files for the tests that need them (CI: ../shared/data).
TEST_DATA = Path(os.environ["MLPLAB_TEST_DATA"]) if os.environ.get("MLPLAB_TEST_DATA") else None


def real_data_dir(name: str) -> Path:
    """Folder of the real IDX files of ``name``; skips the test when they are not available."""
    if TEST_DATA is None or not (TEST_DATA / name / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(
            f"real {name} IDX files not found: set MLPLAB_TEST_DATA to a folder with {name}/"
        )
    return TEST_DATA / name


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The bundled digits are parsed once per session into a private cache; W&B never goes online.
    os.environ.setdefault("MLPLAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` exactly as the CLI would."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*overrides, f"output_dir={output_dir}"])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
