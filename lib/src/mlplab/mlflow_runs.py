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
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    open_store(uri, experiment_name, run_id)
    return ResumableMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name or run_name_from_overrides(),
        tracking_uri=uri,
        tags=tags or None,
        run_id=run_id,
        artifact_location=artifact_location,
    )


def open_store(
    uri: str, experiment_name: str, run_id: str | None, role: str = "this run continues"
) -> None:
    """Check the store before a run logs to it, each problem in one line: a local SQLite file
    that cannot be written (MLflow would retry for minutes), a run to continue that is not
    there (deleted, or another store: a resumed run in another folder would make a new empty
    store), a deleted experiment. A new local store's tables are made by one process at a
    time (two runs starting at once would race to make them)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is not None:
        if run_id is not None and not path.is_file():
            raise TrackingError(
                f"the MLflow run {run_id} {role} is in a store that is not here: "
                f"{path} does not exist; continue it from the folder that holds its mlflow.db, "
                "or point MLFLOW_TRACKING_URI (logger.mlflow.tracking_uri) at its store"
            )
        try:  # as SQLite will: the file itself, or a new file in its folder
            if path.is_file():
                open(path, "r+b").close()
            else:
                tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as exc:
            raise TrackingError(
                f"cannot write the MLflow store {path}: {exc.strerror}; set "
                "MLFLOW_TRACKING_URI (logger.mlflow.tracking_uri) to a writable store"
            ) from None
    try:
        with _store_lock(path):  # the first process makes the tables, the others wait
            client = MlflowClient(uri)
            if run_id is not None:
                stage = client.get_run(run_id).info.lifecycle_stage
                if stage != "active":
                    raise TrackingError(
                        f"the MLflow run {run_id} {role} was deleted in {uri}: "
                        f"restore it (mlflow runs restore --run-id {run_id}), or start a new run"
                    )
                return
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None and experiment.lifecycle_stage != "active":
                raise TrackingError(
                    f"the MLflow experiment {experiment_name} was deleted in {uri}: restore it "
                    f"(mlflow experiments restore --experiment-id {experiment.experiment_id}), or "
                    "choose another (logger.mlflow.experiment_name=...)"
                )
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        missing = run_id is not None and "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code)
        raise TrackingError(
            f"the MLflow run {run_id} {role} is not in {uri} (deleted for good, "
            "or another store): point MLFLOW_TRACKING_URI at its store, or start a new run"
            if missing
            else f"MLflow store {uri}: {first}"
        ) from None


@contextmanager
def _store_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock beside a local store file (``.<name>.lock``) while the block runs."""
    if path is None:
        yield
        return
    import fcntl

    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    MLflow run, when testing is over (after the report is written), and with ``log_model``
    the tested model as an MLflow model (:func:`log_served_model`); nothing without an
    ``MLFlowLogger``."""

    def __init__(self, log_model: bool = True) -> None:
        self.log_model = log_model

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
                if self.log_model and record.tested is not None:
                    try:  # the run's results stand without it: say why, go on
                        log_served_model(client, run_id, Path(best), record.tested[0])
                    except Exception as exc:
                        log.warning("MLflow: the model was not logged as a model: %s", exc)


MODEL_PATH = "model"  # in the run's artifacts: mlflow.pyfunc.load_model("runs:/<id>/model")


def log_served_model(client: Any, run_id: str, checkpoint: Path, examples: Any) -> None:
    """``checkpoint``'s model as an MLflow model of the run, at :data:`MODEL_PATH`: export.py's
    serving model (raw inputs in, probabilities or values out, the preprocessing inside),
    saved by MLflow's pytorch flavor through ``torch.export`` (``pt2``: it loads without
    mlplab or the project's code), with its signature and an input example made of the
    tested ``examples``. ``mlflow.pyfunc.load_model(...).predict(raw)`` gives what
    predict.py gives for the same raw inputs."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from mlplab.export import raw_inputs, serving_model
    from mlplab.trained import load_trained

    served = serving_model(load_trained(checkpoint))
    raw = raw_inputs(served, examples[:5].cpu())
    with torch.no_grad():
        outputs = served(raw).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / MODEL_PATH
        mlflow.pytorch.save_model(
            served,
            str(saved),
            signature=infer_signature(raw.numpy(), outputs),
            input_example=raw[:2].numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        client.log_artifacts(run_id, str(saved), artifact_path=MODEL_PATH)


ONNX_MODEL_PATH = "onnx_model"  # mlflow.pyfunc.load_model("runs:/<id>/onnx_model"): onnxruntime


def exported_run_id(requested: str, stored: Any) -> str:
    """The MLflow run export.py logs into: ``requested`` (a run id), or with ``trained`` the
    id the checkpoint stores (untrusted: a run id's shape, else refused), checked to be in
    the store (:func:`default_tracking_uri`) before anything is exported."""
    run_id = stored if requested == "trained" else requested
    if not isinstance(run_id, str) or not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise TrackingError(
            "mlflow_run=trained: the checkpoint names no MLflow run (trained without "
            "logger=mlflow); give the run's id: mlflow_run=<run id>"
            if requested == "trained"
            else f"mlflow_run={str(requested)[:60]} is no MLflow run id (32 hex digits) nor trained"
        )
    _quiet_mlflow()
    open_store(default_tracking_uri(), "", run_id, role="export.py logs into")
    return run_id


def log_exported_model(run_id: str, folder: Path, examples: Any) -> str:
    """export.py's ONNX model in ``folder`` (``model.onnx``, with ``model.json`` and the model
    card ``README.md`` beside it) as an MLflow model of the run, at :data:`ONNX_MODEL_PATH`,
    its signature and input example made of ``examples`` (raw inputs, as a client has them).
    ``mlflow.pyfunc.load_model(uri).predict(raw)`` runs it with onnxruntime. Returns ``uri``."""
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    model = folder / "model.onnx"
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: examples})[0]
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / ONNX_MODEL_PATH
        mlflow.onnx.save_model(
            onnx.load(str(model)),
            str(saved),
            signature=infer_signature(examples, outputs),
            input_example=examples[:2],
        )
        for name in ("model.json", "README.md"):  # what the model takes and its card
            shutil.copy2(folder / name, saved / name)
        MlflowClient(default_tracking_uri()).log_artifacts(
            run_id, str(saved), artifact_path=ONNX_MODEL_PATH
        )
    return f"runs:/{run_id}/{ONNX_MODEL_PATH}"
