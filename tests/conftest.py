"""Shared fixtures: Hydra composition of the real configs, data locations, isolated caches."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mlplab.resume import register_resolvers

register_resolvers()  # conf/train.yaml uses them, as train.py registers them

# pytest-xdist's workers share the cores, and so do the runs each one starts: each gets its
# share of torch (OpenMP) threads. With torch's default, every process takes all the cores,
# and two default runs side by side on 2 cores took 53 s against 13 s with 1 thread each
# (the same metrics). Set before torch is imported (by the test modules and the runs);
# OMP_NUM_THREADS set by the user wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

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


def run_python(
    *args: str, env: dict | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess:
    """A Python command line run from the repo root, as a user runs it; ``env`` values of
    ``None`` remove the variable."""
    environ = {**os.environ, **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until ``path`` exists while ``process`` runs (a checkpoint, say), then return."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the process ended before the file appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def comparable(metrics: dict) -> dict:
    """A run's metrics.json but for wall times, the one thing two equal runs may differ in."""
    keep = {k: v for k, v in metrics.items() if k not in ("wall_s", "history", "best_checkpoint")}
    keep["history"] = [
        {k: v for k, v in row.items() if k != "epoch_s"} for row in metrics["history"]
    ]
    return keep


def mount_tmpfs(folder: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``folder`` (needs root and a kernel that allows the mount);
    skips the test otherwise. Unmount with :func:`unmount`."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if done.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    return folder


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)])


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB file system of its own (tmpfs), for full-disk faults."""
    mount = mount_tmpfs(tmp_path / f"disk-{uuid.uuid4().hex[:6]}", "1m")
    yield mount
    unmount(mount)


def fill_disk(mount: Path, leave: int) -> None:
    """Fill the file system at ``mount`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(mount).free
    with open(mount / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` exactly as the CLI would."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*overrides, f"output_dir={output_dir}"])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def idx_bytes(array: np.ndarray) -> bytes:
    """Gzipped IDX bytes of a uint8 array (1-d labels or 3-d images)."""
    code = {1: 1, 3: 3}[array.ndim]
    header = bytes([0, 0, 0x08, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def tiny_idx_dataset() -> dict[str, bytes]:
    """The four MNIST file names with small valid contents: 60 train and 20 test images."""
    from mlplab.data.datamodule import IDX_FILES

    rng = np.random.default_rng(0)
    return {
        IDX_FILES["train_images"]: idx_bytes(rng.integers(0, 256, (60, 28, 28))),
        IDX_FILES["train_labels"]: idx_bytes(np.arange(60) % 10),
        IDX_FILES["test_images"]: idx_bytes(rng.integers(0, 256, (20, 28, 28))),
        IDX_FILES["test_labels"]: idx_bytes(np.arange(20) % 10),
    }


@pytest.fixture
def mirror(tmp_path):
    """A small MNIST-format data set served over HTTP from 127.0.0.1; yields (url, md5s)."""
    root = tmp_path / "mirror"
    root.mkdir()
    contents = tiny_idx_dataset()
    for name, data in contents.items():
        (root / name).write_bytes(data)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in contents.items()}
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, root
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def build(cfg: DictConfig):
    """The data module (loaded) and the LightningModule for it, as ``train(cfg)`` builds them."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = instantiate(
        cfg.module,
        input_shape=datamodule.input_shape,
        num_outputs=datamodule.num_outputs,
        task=datamodule.task,
    )
    return datamodule, module


def bare_trainer(tmp_path: Path, callbacks: list, **kwargs):
    """A real Lightning Trainer with nothing extra: no loggers, checkpoints or progress bar."""
    import lightning as L

    options = {
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return L.Trainer(callbacks=callbacks, **(options | kwargs))


QUIET_RUN = [
    "callbacks.progress_bar=null",
    "callbacks.lr_monitor=null",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


# -- trained checkpoints shared by the prediction and export tests ----------------------------
def houses(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A user's table: an id, numbers with gaps, a categorical column, a price and a band."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "house_id": [f"H{seed}-{i:04d}" for i in range(n)],
            "sqm": rng.uniform(30, 200, n),
            "rooms": rng.integers(1, 7, n).astype(float),
            "city": rng.choice(["north", "south", "east"], n),
        }
    )
    frame["price"] = frame.sqm * 3000 + frame.rooms * 1e4 + rng.normal(0, 2e4, n)
    frame["price"] += np.where(frame.city == "north", 1e5, 0.0)
    frame["band"] = np.where(frame.price > frame.price.median(), "dear", "cheap")
    frame.loc[[3, 8], "sqm"] = np.nan
    return frame


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A short MLP run on the bundled digits: its run dir."""
    out = tmp_path_factory.mktemp("digits")
    from mlplab.train import train

    overrides = [*QUIET_RUN, "trainer.max_epochs=2", "trainer.limit_train_batches=10"]
    train(compose_config(overrides, out))
    return out


@pytest.fixture(scope="session")
def table_runs(tmp_path_factory):
    """A regression (price) and a classification (band) model of the same table."""
    root = tmp_path_factory.mktemp("tables")
    path = root / "houses.csv"
    houses().to_csv(path, index=False)
    from mlplab.train import train

    runs = {}
    for target in ("price", "band"):
        out = root / target
        features = "data.features=[sqm,rooms,city]"
        overrides = [*QUIET_RUN, "data=table", f"data.path={path}", f"data.target={target}"]
        train(compose_config([*overrides, features, "trainer.max_epochs=40"], out))
        runs[target] = out
    return runs
