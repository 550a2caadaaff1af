"""Run a task for a command-line entry point: config checked first, user errors as one line."""

from __future__ import annotations

import errno
import importlib
import logging
import sys
import warnings
from typing import Any

from omegaconf import DictConfig

from mlplab.config import validate_config
from mlplab.errors import DiskFullError, JobRequeued, MlplabError, RunInterrupted
from mlplab.runs import register_resolvers
from mlplab.sweep import in_multirun, in_submitit_job, record_failure

register_resolvers()  # before Hydra composes conf/train.yaml, which uses them


def run_task(cfg: DictConfig, task: str, validate: bool = True) -> dict[str, Any]:
    """Run ``task`` (``"module:function"``) on ``cfg`` and return its metrics.

    The config is validated before the task's module is imported, so a typo is reported in
    well under a second instead of after torch and Lightning have loaded. A
    :class:`MlplabError` is printed as ``error: ...`` on stderr and exits with status 2
    (130 after Ctrl-C, 143 after SIGTERM, with a checkpoint to resume from).
    """
    try:
        if validate:
            validate_config(cfg)
        module_name, function_name = task.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        quiet_third_party_output(verbose=bool(cfg.get("verbose", False)))
        return function(cfg)
    except Exception as exc:
        exc = _disk_full(exc) or _mlplab_cause(exc)
        # In a sweep one failing job (NaN loss, out-of-range value, a bug) must not abort the
        # others: it is recorded in its job dir and the sweeper gets the worst value. Ctrl-C or
        # SIGTERM is no job failure: it stops the sweep, with the command that resumes the job.
        # A SLURM job (submitit) is its own process: its SIGTERM (scancel) stops that job only.
        # A requeued one continues when it restarts: no result for the sweep yet.
        ends_process = isinstance(exc, RunInterrupted) and (
            isinstance(exc, JobRequeued) or not in_submitit_job()
        )
        if in_multirun() and not ends_process and not cfg.get("sweep", {}).get("fail_fast", False):
            status = "interrupted" if isinstance(exc, RunInterrupted) else "failed"
            record_failure(cfg.output_dir, exc, status)
            print(
                f"error: job {status}, sweep continues: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            return {"status": status, cfg.get("optimized_metric"): cfg.sweep.failed_value}
        if isinstance(exc, MlplabError):
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        raise


def _no_lightning_info(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("lightning") and record.levelno < logging.WARNING)


def _disk_full(exc: BaseException) -> DiskFullError | None:
    """A one-line error for a full disk anywhere behind ``exc`` (Lightning and Hydra wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            where = seen.filename or "the run's files"
            return DiskFullError(
                f"no space left on the device writing {where}: free some space, or point the "
                "run dir at another disk (hydra.run.dir=...)"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _mlplab_cause(exc: BaseException) -> BaseException:
    """The MlplabError behind ``exc``, if any: Hydra wraps what a constructor raises (a
    missing checkpoint, a bad model argument) in its own exception, once per nesting level."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, MlplabError):
        cause = cause.__cause__
    return cause if cause is not None else exc


def quiet_third_party_output(verbose: bool = False) -> None:
    """Keep the terminal for a person: Lightning's info lines go to the log file only.

    ``lightning`` attaches its own console handler *and* propagates to the root logger that
    Hydra configured (console + ``train.log``), so every line would print twice: its own
    handler goes. Unless ``verbose``, the console shows Lightning's warnings and errors but
    not its info lines (accelerator found, ``limit_*_batches`` echoes, checkpoint restored);
    the log file keeps them all. The progress bar and the model summary are not log lines.
    """
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    if not verbose:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                handler.addFilter(_no_lightning_info)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in record.getMessage()
    )
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; harmless, but noisy.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The module logs sums already reduced across DDP processes, so no further sync is due.
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed")
    # mlplab's data modules resume mid-epoch exactly (the batches done are in the checkpoint;
    # the resume tests compare every metric with an uninterrupted run): the warning is wrong.
    warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable")
    # We log per epoch only, so a short epoch below log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
