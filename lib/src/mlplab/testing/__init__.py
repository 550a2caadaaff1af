"""Helpers for a project's tests (they need pytest): run the project's commands as a user
does, compose its config as the command line would, and keep parallel test processes to
their share of the cores. A project's ``tests/conftest.py`` imports the fixtures it uses::

    from mlplab.testing import isolated_environment  # noqa: F401  (an autouse fixture)
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mlplab.config import ENTRY_CONF_DIR, conf_dir
from mlplab.resume import register_resolvers
from mlplab.signals import STOP_REQUESTED

register_resolvers()  # conf/train.yaml uses them, as the entry points register them


def share_threads() -> None:
    """Give each pytest-xdist worker its share of torch (OpenMP) threads.

    The workers share the cores, and so do the runs each one starts. With torch's default,
    every process takes all the cores: two default runs side by side on 2 cores took 53 s
    against 13 s with 1 thread each (the same metrics). Call it before torch is imported;
    ``OMP_NUM_THREADS`` set by the user wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


share_threads()

PROJECT = conf_dir().parent  # the project under test: its conf/, entry points and src/
# ... also for a test that changes directory (its config's ${project:...}, its task options)
ENTRY_CONF_DIR[:] = [PROJECT / "conf"]
# Real MNIST / Fashion-MNIST IDX files for the tests that need them (CI: ../shared/data).
TEST_DATA = Path(os.environ["MLPLAB_TEST_DATA"]) if os.environ.get("MLPLAB_TEST_DATA") else None

# A run that prints only its summary and writes no logger files.
QUIET_RUN = [
    "callbacks.progress_bar=null",
    "callbacks.lr_monitor=null",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def real_data_dir(name: str) -> Path:
    """Folder of the real IDX files of ``name``; skips the test when they are not available."""
    if TEST_DATA is None or not (TEST_DATA / name / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(
            f"real {name} IDX files not found: set MLPLAB_TEST_DATA to a folder with {name}/"
        )
    return TEST_DATA / name


@pytest.fixture(autouse=True, scope="session")
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A private cache per test session; W&B never goes online or prompts; Ctrl-C as in a
    terminal."""
    os.environ.setdefault("MLPLAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    # The processes the tests start and signal get Ctrl-C as a terminal's foreground job has
    # it, also when the tests run in a shell's background job (whose commands start ignoring
    # it, and pass that on). A test of an ignored Ctrl-C says so itself.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def default_signal_handlers() -> Iterator[None]:
    """Each test ends with the process's Ctrl-C and SIGTERM handlers as it began, and with no
    stop requested: a flow that stopped on a signal in the test's process ignores Ctrl-C
    from then on (its process is ending: mlplab.checkpoints), the processes a later test
    starts would inherit that, and a later flow would take the stop as its own."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    STOP_REQUESTED.clear()


def run_python(
    *args: str, env: dict | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess:
    """A Python command line run from the project's root, as a user runs it; ``env`` values
    of ``None`` remove the variable."""
    environ = {**os.environ, **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def run_command(
    *args: str, env: dict | None = None, cwd: Path | None = None, merged: bool = False
) -> subprocess.CompletedProcess:
    """``python <script> <args...>`` (a script of the project: ``train.py``, ``eval.py``...)
    run in this process, as :func:`run_python` runs it in a new one: the same command line,
    environment and working dir (the project's root, or ``cwd``), stdout and stderr captured
    at the file descriptors, the exit status a process would have. Its imports are paid once
    per test process instead of once per command (5-6 s each on a 2-core CPU), which is most
    of a short command's time. ``merged``: stderr into stdout, in the order written (as
    ``stderr=subprocess.STDOUT``).

    What only a real process shows stays with :func:`run_python`: signals, two processes
    meeting in one run dir, the interpreter's own exit, a parallel launcher's workers.
    """
    from mlplab import speedups

    script = Path(cwd or PROJECT) / args[0]  # as Python finds it: from the working dir
    with _restored_process_state(env, cwd or PROJECT), _captured_output(merged) as (out, err):
        speedups.exit_after_command = False  # the command returns to this process
        sys.argv = [str(script), *args[1:]]
        try:
            runpy.run_path(str(script), run_name="__main__")
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except Exception:  # what Python prints and exits 1 with
            traceback.print_exc()
            status = 1
    stderr = None if merged else err.text
    return subprocess.CompletedProcess([sys.executable, *args], status, out.text, stderr)


def _exit_status(code: object) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)  # SystemExit("message"): Python prints it, status 1
    return 1


class _Captured:
    """A file that a command's output goes to, read when the command has ended."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.text = ""

    def read(self) -> None:
        self.file.flush()
        self.file.seek(0)
        self.text = self.file.read()
        self.file.close()


@contextlib.contextmanager
def _captured_output(merged: bool) -> Iterator[tuple[_Captured, _Captured]]:
    """stdout and stderr into files (one file if ``merged``), Python's streams and the
    descriptors 1 and 2 alike (what a library writes below Python, a child's output)."""
    out = _Captured()
    err = out if merged else _Captured()
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    os.dup2(out.file.fileno(), 1)
    os.dup2(err.file.fileno(), 2)
    sys.stdout, sys.stderr = out.file, err.file
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for captured in {id(out): out, id(err): err}.values():
            captured.read()


@contextlib.contextmanager
def _restored_process_state(env: dict | None, cwd: Path) -> Iterator[None]:
    """What a command changes in its process, put back when it ends: the environment, the
    working dir, argv, signal handlers, logging's handlers and levels, warning filters,
    Hydra's global state and torch's threads."""
    from hydra.core.global_hydra import GlobalHydra

    from mlplab import speedups

    environ, argv, path, where = dict(os.environ), list(sys.argv), list(sys.path), os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    conf = list(ENTRY_CONF_DIR)
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    os.environ.update({k: v for k, v in (env or {}).items() if v is not None})
    for name in [k for k, v in (env or {}).items() if v is None]:
        os.environ.pop(name, None)
    os.chdir(cwd)
    # PYTHONPATH is read by Python as it starts: its folders go where Python puts them, and
    # what the command imported from them goes with the command.
    added = [os.path.abspath(p) for p in (env or {}).get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:0] = added
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings(), _restored_logging():
            yield
    finally:
        GlobalHydra.instance().clear()
        speedups.exit_after_command = True
        os.chdir(where)
        os.environ.clear()
        os.environ.update(environ)
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_initialized():  # a DDP run's group
            distributed.destroy_process_group()
        if sys.modules.get("wandb"):  # as the process's end would: runs finished, service gone
            sys.modules["wandb"].teardown()  # (and its WANDB_SERVICE, which children would use)
        sys.argv[:], sys.path[:], ENTRY_CONF_DIR[:] = argv, path, conf
        for name, module in list(sys.modules.items()):
            if any(str(getattr(module, "__file__", None)).startswith(a + os.sep) for a in added):
                del sys.modules[name]
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def _restored_logging() -> Iterator[None]:
    """The loggers that existed before the command as they were: Hydra configures logging for
    each run (a file handler in the run dir, a stream handler on the captured stdout), and
    libraries set levels. A logger made during the command (by a library imported then) is
    its library's, kept as that library set it."""
    manager = logging.Logger.manager
    named = [x for x in manager.loggerDict.values() if isinstance(x, logging.Logger)]
    loggers = [logging.getLogger(), *named]
    before = {x: (list(x.handlers), x.level, x.propagate, x.disabled) for x in loggers}
    disabled = manager.disable
    try:
        yield
    finally:
        for each, (handlers, level, propagate, off) in before.items():
            for handler in each.handlers:
                if handler not in handlers:
                    handler.close()
            each.handlers[:] = handlers
            each.setLevel(level)
            each.propagate, each.disabled = propagate, off
        logging.disable(disabled)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 900) -> None:
    """Wait until ``path`` exists while ``process`` runs (a checkpoint, say), then return."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the process ended before the file appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def comparable(metrics: dict) -> dict:
    """A run's metrics.json but for wall times, the one thing two equal runs may differ in."""
    timed = ("wall_s", "fit_s", "history", "best_checkpoint")
    keep = {k: v for k, v in metrics.items() if k not in timed}
    keep["history"] = [
        {k: v for k, v in row.items() if k != "epoch_s"} for row in metrics["history"]
    ]
    return keep


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose the project's ``conf/<config_name>.yaml`` with ``overrides`` as the command
    line would."""
    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=[*overrides, f"output_dir={output_dir}"])


def group_options(group: str) -> list[str]:
    """The options of a config group of the project."""
    return sorted(p.stem for p in (PROJECT / "conf" / group).glob("*.yaml"))


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


def idx_bytes(array: np.ndarray) -> bytes:
    """Gzipped IDX bytes of a uint8 array (1-d labels or 3-d images)."""
    code = {1: 1, 3: 3}[array.ndim]
    header = bytes([0, 0, 0x08, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def tiny_idx_dataset() -> dict[str, bytes]:
    """The four MNIST file names with small valid contents: 60 train and 20 test images."""
    from mlplab.data.idx import IDX_FILES

    rng = np.random.default_rng(0)
    return {
        IDX_FILES["train_images"]: idx_bytes(rng.integers(0, 256, (60, 28, 28))),
        IDX_FILES["train_labels"]: idx_bytes(np.arange(60) % 10),
        IDX_FILES["test_images"]: idx_bytes(rng.integers(0, 256, (20, 28, 28))),
        IDX_FILES["test_labels"]: idx_bytes(np.arange(20) % 10),
    }


def build(cfg: DictConfig):
    """The data module (loaded) and the LightningModule for it, as a training flow builds
    them: the module gets the data's ``input_shape``, ``num_outputs`` and ``task``."""
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


# -- faults: a full disk ----------------------------------------------------------------------
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
def small_disk(tmp_path: Path):
    """A 1 MB file system of its own (tmpfs), for full-disk faults."""
    mount = mount_tmpfs(tmp_path / f"disk-{uuid.uuid4().hex[:6]}", "1m")
    yield mount
    unmount(mount)


def fill_disk(mount: Path, leave: int) -> None:
    """Fill the file system at ``mount`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(mount).free
    with open(mount / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
