"""Weights & Biases without surprises: online when logged in, otherwise offline, never a prompt."""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import netrc
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from mlplab.errors import TrackingError
from mlplab.instantiate import buildable
from mlplab.rundir import atomic_file
from mlplab.secrets import redact_override

log = logging.getLogger(__name__)


def wandb_is_logged_in() -> bool:
    """True when an API key is in the environment or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else ``online`` when logged in, else ``offline``."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_is_logged_in() else "offline")


def wandb_server() -> tuple[str, int]:
    """Host and port a W&B client connects to: the HTTPS proxy if one is set, else the server
    (``WANDB_BASE_URL``, default https://api.wandb.ai)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def unreachable(timeout_s: float) -> str | None:
    """Why the W&B server cannot be reached within ``timeout_s`` seconds, or ``None``."""
    host, port = wandb_server()
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        return f"cannot reach {host}:{port} ({reason})"
    return None


@buildable
def wandb_logger(
    mode: str = "auto", verbose: bool = False, connect_timeout_s: float = 5.0, **kwargs: Any
):
    """A Lightning ``WandbLogger`` whose ``mode`` is resolved by :func:`resolve_wandb_mode`.

    Before going online it checks, within ``connect_timeout_s``, that the W&B server can be
    reached (cluster nodes often have a key but no network): with ``mode=auto`` it then
    falls back to offline, saying why in one line; with ``mode=online`` it stops with one
    line. W&B's own terminal output (banners, the run history dump at the end) is silenced
    unless ``verbose``. Every other argument goes to
    ``lightning.pytorch.loggers.WandbLogger`` (and from there to ``wandb.init``).
    """
    if importlib.util.find_spec("wandb") is None:
        raise TrackingError(
            "logger=wandb needs the wandb package: pip install 'mlplab[wandb]' "
            "(a project made with tracker wandb has it)"
        )
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    asked, mode = mode, resolve_wandb_mode(mode)
    why_offline = "not logged in"
    if mode == "online" and (problem := unreachable(connect_timeout_s)):
        if asked == "online":
            raise TrackingError(
                f"W&B: {problem} and logger.wandb.mode=online: check the network, or use "
                "logger.wandb.mode=auto (falls back to offline) or offline"
            )
        mode, why_offline = "offline", problem
    if not verbose and "settings" not in kwargs:
        kwargs["settings"] = wandb.Settings(silent=True)
    if kwargs.get("name") is None:
        kwargs["name"] = run_name_from_overrides()
    if kwargs.get("group") is None:
        kwargs["group"] = sweep_group()
    logger = WandbLogger(mode=mode, **kwargs)
    # Lightning 2.6 always passes `anonymous` (None) to wandb.init, which W&B 0.31 answers
    # with a deprecation warning on every run; the setting has no effect, so leave it out.
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    if mode == "offline" and rank_zero_only.rank == 0:  # other DDP ranks have no W&B run
        run_dir = os.path.dirname(logger.experiment.dir)  # .../wandb/offline-run-<time>-<id>
        print(f"W&B: {why_offline}, logging offline; upload later with: wandb sync {run_dir}")
    return logger


def run_name_from_overrides() -> str | None:
    """``optimizer=adam,regularization.dropout=0.5`` for a Hydra job; ``None`` (W&B picks) else."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    # Secret values (+notes.api_key=...) stay out of the name; see mlplab.secrets.
    overrides = sorted(redact_override(o) for o in HydraConfig.get().overrides.task)
    return ",".join(overrides) or None


def sweep_group() -> str | None:
    """``sweep 2026-11-22/11-20-20-123456`` for the jobs of one multirun; ``None`` otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"sweep {sweep_dir.parent.name}/{sweep_dir.name}"


# What a run's W&B summary holds beyond the last logged value of each metric.
SUMMARY_KEYS = {
    "val/acc_best": "best/val_acc",
    "best_epoch": "best/epoch",
    "tested_epoch": "tested_epoch",
    "epochs_trained": "stop_epoch",
    "stopped_early": "stopped_early",
    "stop_reason": "stop_reason",
    "baseline/test_acc": "baseline/test_acc",
    "margin_points": "margin_points",
    "num_params": "num_params",
    "wall_s": "wall_s",
}


class WandbSummary(L.Callback):
    """Put the run record's headline metrics into the W&B summary and upload its pictures;
    with ``log_model``, the tested checkpoint as the run's model artifact
    (``model-<run id>:best``, type ``model``, the summary as its metadata), which the
    registry can link. Lightning's own ``log_model`` would upload every checkpoint
    (``last.ckpt`` too, also aliased ``best``): the logger's option stays off.

    Runs when testing is over, after the report is written; does nothing without a
    ``WandbLogger``.
    """

    def __init__(self, log_model: bool = True) -> None:
        self.log_model = log_model

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        from mlplab.record import RunRecord

        record = RunRecord.of(trainer)
        if stage != "test" or record is None or not trainer.is_global_zero:
            return
        m = record.metrics
        summary = {k: v for k, v in m.items() if k.startswith("test/")}
        summary |= {name: m[key] for key, name in SUMMARY_KEYS.items() if m.get(key) is not None}
        summary |= record.wandb_summary
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(summary)
                for name, path in record.files.items():
                    if path.suffix == ".png":
                        logger.log_image(key=f"report/{name}", images=[str(path)])
                best = m.get("best_checkpoint")
                if self.log_model and record.tested is not None and best and Path(best).is_file():
                    _log_model_artifact(logger.experiment, Path(best), summary)


def _log_model_artifact(run: Any, checkpoint: Path, summary: dict[str, Any]) -> None:
    import wandb

    metadata = {k: v for k, v in summary.items() if isinstance(v, int | float | str)}
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    artifact.add_file(str(checkpoint), name=checkpoint.name)
    run.log_artifact(artifact, aliases=["best"])


def wandb_run_id(loggers: list) -> str | None:
    """The id of the W&B run among ``loggers``, if any (stored in checkpoints to resume it)."""
    from lightning.pytorch.loggers import WandbLogger

    ids = (lg.experiment.id for lg in loggers if isinstance(lg, WandbLogger))
    return next((i for i in ids if isinstance(i, str)), None)  # DDP ranks > 0: a dummy run


@contextmanager
def finishing(loggers: list) -> Iterator[None]:
    """Close the W&B run of any ``WandbLogger`` in ``loggers`` when the block ends, marked
    failed (exit code 1) if it raised."""
    from lightning.pytorch.loggers import WandbLogger

    failed = True
    try:
        yield
        failed = False
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                try:
                    logger.experiment.finish(exit_code=1 if failed else 0)
                except Exception as exc:  # e.g. scancel: SLURM's SIGTERM reached W&B's service
                    if not failed:
                        raise
                    log.warning(f"W&B run not finished cleanly ({type(exc).__name__}: {exc})")


def _csv_value(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


class _ResumingWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows an earlier session of the run wrote, and
    never leaving ``metrics.csv`` cut short or absent.

    Lightning deletes ``metrics.csv`` when its folder is reused; a resumed run reuses it. The
    earlier rows are read instead, and the file is left as it is. The new rows are held back
    until the resumed run logs its first row of an epoch, which says where it resumed: then
    the earlier rows of that epoch and later ones (and repeated step-0 rows) make way for the
    new ones. A rewrite (that merge, or a new column's header) writes the whole table under
    a temporary name and renames it over the old file, so a kill at any moment leaves the
    old table or the new one; rows are appended otherwise.
    """

    metrics: list[dict[str, Any]]  # Lightning's: the rows not yet written

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, Any]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self._earlier = [
                    {k: _csv_value(v) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(f)
                ]

    def save(self, final: bool = False) -> None:
        merged = bool(self._earlier and self.metrics)
        if merged:
            epochs = [r["epoch"] for r in self.metrics if "epoch" in r]
            if not epochs and not final:
                return  # rows without an epoch (a baseline, a learning rate) say nothing yet
            redone = min(epochs, default=math.inf)
            repeated = {(r["step"], frozenset(r)) for r in self.metrics if "epoch" not in r}
            kept = [
                r
                for r in self._earlier
                if r.get("epoch", -1) < redone and (r["step"], frozenset(r)) not in repeated
            ]
            self.metrics = kept + self.metrics
            self._earlier = []
        if not self.metrics:
            return
        exists = self._fs.isfile(self.metrics_file_path)
        if (not self._record_new_keys() and not merged) or not exists:
            super().save()  # appends to the file (or starts it): no header changes
            return
        rows = self.metrics
        if not merged:  # a new column: the rows on file, then these, under the new header
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                rows = list(csv.DictReader(f)) + rows
        with atomic_file(self.metrics_file_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` survives a resume: every epoch once."""

    _experiment: _ResumingWriter | None  # Lightning's: made on first use

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.save(final=True)  # whatever is still held back
        super().finalize(status)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment
