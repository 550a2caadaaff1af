"""MLflow for those who cannot use W&B: ``logger=mlflow`` (or ``logger=[default,mlflow]``).

A run is an MLflow run: the resolved config as params (secrets redacted, as for W&B), each
epoch's metrics, the run's summary metrics, and its report, pictures and best checkpoint as
artifacts. A resumed run (``ckpt_path=``, a requeued SLURM job) continues the same MLflow
run: its id travels in the checkpoint. A sweep's jobs are runs of one experiment, tagged
with the sweep. The store is local by default, a SQLite file in the folder the command
runs from (``mlflow.db``, artifacts in ``mlartifacts/``); ``MLFLOW_TRACKING_URI`` or
``logger.mlflow.tracking_uri`` points elsewhere (a server, another file).

Look at the runs with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from mlplab.errors import TrackingError
from mlplab.instantiate import buildable
from mlplab.tracking import SUMMARY_KEYS, run_name_from_overrides, sweep_group

log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"  # the default store, in the folder a command runs from
ARTIFACTS_DIR = "mlartifacts"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(STORE_FILE).resolve()}"


@buildable
def mlflow_logger(
    experiment_name: str = "mlplab",
    tracking_uri: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    artifact_location: str | None = None,
) -> MLFlowLogger:
    """A Lightning ``MLFlowLogger`` on the local store unless told otherwise.

    Args:
        experiment_name: the experiment the run belongs to (created when missing).
        tracking_uri: the store; ``None``: :func:`default_tracking_uri`.
        run_name: ``None``: the command line's overrides (as for W&B).
        run_id: continue this run (set from the checkpoint when a run resumes).
        tags: tags of the run; a sweep's jobs also get ``sweep``.
        artifact_location: where a new experiment keeps its artifacts; ``None``:
            ``mlartifacts/`` beside a local store file.
    """
    if importlib.util.find_spec("mlflow") is None:
        raise TrackingError(
            "logger=mlflow needs the mlflow package: pip install 'mlplab[mlflow]' "
            "(a project made with tracker mlflow has it)"
        )
    uri = tracking_uri or default_tracking_uri()
    if artifact_location is None and uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        artifact_location = (store.parent / ARTIFACTS_DIR).resolve().as_uri()
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if (group := sweep_group()) is not None:
        tags.setdefault("sweep", group)
    _quiet_mlflow()
    return ResumableMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name or run_name_from_overrides(),
        tracking_uri=uri,
        tags=tags or None,
        run_id=run_id,
        artifact_location=artifact_location,
    )


def _quiet_mlflow() -> None:
    """MLflow's own lines (the store's migration notes on first use, the run's URL banner) go
    where the run's other log lines go: train.log, and the terminal only from warnings on
    (:func:`mlplab.cli.quiet_third_party_output`). MLflow would print them itself."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    import mlflow  # noqa: F401  (now, with that setting)

    own = logging.getLogger("mlflow")  # imported before with its own handler: taken off
    for handler in list(own.handlers):
        own.removeHandler(handler)
    own.propagate = True


class ResumableMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger``, whose params survive a resume.

    MLflow refuses to change a logged param; a resumed run logs its config again, with
    ``ckpt_path`` and perhaps a raised ``trainer.max_epochs``. The values first logged stay;
    a value the resume changed is logged as the tag ``resumed/<param>``.
    """

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        flat = _flatten_dict(_convert_params(params))
        logged = self.experiment.get_run(self.run_id).data.params
        # Lightning logs each value cut to 250 characters: compare what it would log.
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != str(v)[:250]}
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, f"resumed/{key}", str(value)[:5000])
        fresh = {k: v for k, v in flat.items() if k not in logged}
        if fresh:
            super().log_hyperparams(fresh)


def mlflow_run_id(loggers: list) -> str | None:
    """The id of the MLflow run among ``loggers``, if any (stored in checkpoints)."""
    ids = (lg.run_id for lg in loggers if isinstance(lg, MLFlowLogger))
    return next((i for i in ids if isinstance(i, str)), None)


class MlflowSummary(L.Callback):
    """The run record's headline metrics, its report, pictures and best checkpoint into the
    MLflow run, when testing is over (after the report is written); nothing without an
    ``MLFlowLogger``."""

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from mlplab.record import RunRecord

        record = RunRecord.of(trainer)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        if stage != "test" or record is None or not trainer.is_global_zero or not loggers:
            return
        m = record.metrics
        summary = {
            name: float(m[key])
            for key, name in SUMMARY_KEYS.items()
            if isinstance(m.get(key), int | float) and not isinstance(m.get(key), bool)
        }
        for logger in loggers:
            client, run_id = logger.experiment, logger.run_id
            for name, value in summary.items():
                client.log_metric(run_id, name, value, step=trainer.global_step)
            client.set_tag(run_id, "stop_reason", str(m.get("stop_reason", "")))
            for path in record.files.values():
                if path.is_file():
                    client.log_artifact(run_id, str(path), artifact_path="report")
            best = m.get("best_checkpoint")
            if best and Path(best).is_file():
                client.log_artifact(run_id, best, artifact_path="checkpoints")
