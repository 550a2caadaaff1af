"""Optuna studies of ``hparams_search=optuna``: where a study is stored, its pruners, and how
each job reaches its own trial.

A job reaches its trial through the study's storage, never through the sweep's process
memory. The sweeper (:mod:`hydra_plugins.mlplab_studies.study_sweeper`) gives each job
``hydra.sweeper.trial=<number>`` and the study's storage, so a job that the basic, joblib
or submitit launcher runs (on this machine or another) does two things itself:

- it reports the optimized metric at each validation, and stops when the pruner says so
  (:class:`mlplab.pruning.TrialReporting`);
- it tells its trial how it ended (:class:`TellsItsTrial`): its value, PRUNED, or FAIL.

A finished job's value therefore reaches the study even when the sweep stops right after it.
A job whose process died never tells; its trial is failed by the sweeper (:func:`fail_dead_trials`),
from the heartbeat that the job (or the sweep while the job waits) records in the trial.

Light to import: optuna loads only when a study is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlplab.errors import MlplabError, RunInterrupted
from mlplab.signals import signals_held

log = logging.getLogger(__name__)
JOURNAL_FILE = "optuna.journal"  # the study's default storage, in the sweep dir
OPTIMIZED = "optimized_metric"  # a study's user attr: the metrics its values are
HEARTBEAT = "mlplab:heartbeat"  # a trial's system attr: who runs it, and when it last said so
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner"}


class StudyError(MlplabError):
    """A study that cannot be opened or continued as asked (one line, exit 2)."""


# -- storage --------------------------------------------------------------------------------
def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage as one absolute spec that every job can open wherever it runs: a
    database URL (``sqlite:///study.db``, ``postgresql://...``) or an Optuna journal file
    (any other path; ``optuna.journal`` in the sweep dir when none is given)."""
    if not storage:
        return str(Path(sweep_dir).absolute() / JOURNAL_FILE)
    storage = str(storage)
    if storage.rstrip("/") == "sqlite:" or storage.endswith(":memory:"):
        raise StudyError(
            f"hydra.sweeper.storage={storage} is a database in memory: each job opens its own, "
            "and the study is lost when the sweep ends; give a file (sqlite:///study.db) or "
            "leave it unset (optuna.journal in the sweep dir)"
        )
    if storage.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(storage.removeprefix("sqlite:///")).absolute())
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().absolute())


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` (see :func:`storage_url`); one line if it cannot open."""
    import optuna

    try:
        if "://" not in url:  # Optuna's journal file: the storage it advises on shared disks
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(url)
            drop_torn_record(url)
            return optuna.storages.JournalStorage(backend)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StudyError(f"cannot open the study storage {url}: {reason}") from None


def drop_torn_record(journal: str | Path) -> None:
    """Cut off the last record of a journal file if it is torn (a process died, or the disk
    filled, in the middle of appending it): it never ended with its newline, so no reader
    took it, and the next record appended after it would make one line that no reader can
    parse. Done under the journal's own lock, which every writer holds while it appends."""
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(journal)
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend(path) takes
    lock.acquire()
    try:
        with open(path, "rb+") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(size - 1)
            if file.read(1) == b"\n":
                return
            file.seek(0)  # a journal's records are small: one read finds the last newline
            keep = file.read().rfind(b"\n") + 1
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
    finally:
        lock.release()
    log.warning("cut off the torn last record of %s (%d bytes)", path, size - keep)


# -- pruners --------------------------------------------------------------------------------
def pruner_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    """``hydra.sweeper.pruner`` as (name, options): a name (``median``), or a mapping with a
    ``name`` and the options of Optuna's pruner (``{name: median, n_warmup_steps: 2}``)."""
    if spec is None:
        return "none", {}
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, dict):
        options = dict(spec)
        name = str(options.pop("name", "none"))
    else:
        name, options = str(spec), {}
    if name not in PRUNERS:
        raise StudyError(
            f"hydra.sweeper.pruner={name} is not a pruner: use one of {', '.join(PRUNERS)} "
            "(options as {name: median, n_warmup_steps: 2})"
        )
    return name, options


def make_pruner(spec: Any) -> Any:
    """Optuna's pruner for ``hydra.sweeper.pruner`` (see :func:`pruner_spec`)."""
    import optuna

    name, options = pruner_spec(spec)
    if name == "hyperband" and options.get("reduction_factor", 3) < 2:
        raise StudyError(
            f"hydra.sweeper.pruner reduction_factor={options['reduction_factor']} is not "
            "allowed: hyperband keeps 1 in reduction_factor trials at each rung, so it must be >= 2"
        )
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"hydra.sweeper.pruner={name}: {exc}") from None


# -- liveness -------------------------------------------------------------------------------
def owner() -> dict[str, Any]:
    """This process, as a trial's heartbeat names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def alive(beat: dict[str, Any], grace_s: float) -> bool:
    """Whether the process a heartbeat names may still run its trial: on this machine, while
    its pid lives; elsewhere, while it beat within ``grace_s`` seconds."""
    if beat.get("host") == socket.gethostname():
        try:
            os.kill(int(beat["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - float(beat.get("time", 0)) <= grace_s


def fail_dead_trials(study: Any, grace_s: float) -> list[int]:
    """End each RUNNING trial whose process died (see :func:`alive`; one that died before its
    first heartbeat, once it is older than ``grace_s``): as its job dir says, when its job
    ended but died before it told the trial (:func:`job_ending`), else FAIL. Their numbers."""
    import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    ended = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT)
        if beat is not None:
            dead = not alive(beat, grace_s)
        else:  # asked, then killed before it said who runs it
            started = trial.datetime_start
            dead = started is not None and (now - started).total_seconds() > grace_s
        if not dead:
            continue
        job_dir = trial.user_attrs.get("job_dir")
        told = False
        if job_dir and any((Path(job_dir) / f).is_file() for f in ("metrics.json", "failure.json")):
            state, status, values = job_ending(Path(job_dir), None, study.user_attrs.get(OPTIMIZED))
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "status", status)
                told = study._storage.set_trial_state_values(trial._trial_id, state, values)
            except UpdateFinishedTrialError:
                told = False
        elif fail_trial(study._storage, trial._trial_id, "died"):
            told = True
        if told:
            ended.append(trial.number)
    return ended


def job_ending(output_dir: Path, result: Any, metric: Any) -> tuple[Any, str, list | None]:
    """How a trial's job ended, read from its job dir, as (state, status, values):
    ``failure.json`` (the job failed, was interrupted or not run) is FAIL, ``pruned`` in
    ``metrics.json`` PRUNED; otherwise ``result`` (what the task returned: the optimized
    metric, or one per objective) is the value; ``result`` None (the job was stopped after
    it ran, or died before it told) reads ``metric`` (a name or a list) of metrics.json."""
    from optuna.trial import TrialState

    failure, metrics = output_dir / "failure.json", output_dir / "metrics.json"
    measured = _read_json(metrics)
    if failure.is_file():
        return TrialState.FAIL, _read_json(failure).get("status", "failed"), None
    if measured.get("pruned"):
        return TrialState.PRUNED, "pruned", None
    if result is None and metric is not None:  # one metric, or one per objective
        many = isinstance(metric, list | tuple) or OmegaConf.is_list(metric)
        result = [measured.get(m) for m in metric] if many else measured.get(metric)
    values = list(result) if isinstance(result, list | tuple) else [result]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return TrialState.FAIL, "no value", None
    return TrialState.COMPLETE, "finished", values


def fail_trial(storage: Any, trial_id: int, status: str) -> bool:
    """Mark a RUNNING trial FAIL, saying why (its user attr ``status``); False if it had
    ended already (its job told it, or another process failed it first)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, "status", status)
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


class Heartbeat:
    """A thread recording, every ``interval_s`` seconds while the block runs, that this
    process runs ``trial_ids`` (a trial's system attr :data:`HEARTBEAT`); ``only_own``: only
    while no other process has taken a trial over (a sweep whose job beats for itself)."""

    def __init__(
        self, storage: Any, trial_ids: list[int], interval_s: float, only_own: bool = False
    ) -> None:
        self.storage, self.trial_ids, self.interval_s = storage, list(trial_ids), interval_s
        self.only_own = only_own
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlplab-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        me = owner()
        for trial_id in self.trial_ids:
            if self.only_own:
                beat = self.storage.get_trial(trial_id).system_attrs.get(HEARTBEAT, {})
                taken = (beat.get("host"), beat.get("pid")) != (me["host"], me["pid"])
                if beat and taken:
                    continue
            with contextlib.suppress(UpdateFinishedTrialError):  # it ended: nothing to say
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT, me)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a missed beat is no reason to stop a job
                self.beat()


# -- a job's own trial ----------------------------------------------------------------------
class JobTrial:
    """The trial this job of an Optuna sweep is, reached through the study's storage."""

    def __init__(self, sweeper: DictConfig) -> None:
        import optuna

        self.sweeper = sweeper
        self.storage = open_storage(str(sweeper.storage))
        self.study = optuna.load_study(
            study_name=str(sweeper.study_name),
            storage=self.storage,
            pruner=make_pruner(sweeper.get("pruner")),
        )
        self.number = int(sweeper.trial)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, self.number
        )
        self.pruner = pruner_spec(sweeper.get("pruner"))[0]

    @staticmethod
    def of_this_job() -> JobTrial | None:
        """This job's trial, when Hydra runs it as a job of mlplab's Optuna sweeper."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        sweeper = HydraConfig.get().sweeper
        if sweeper.get("trial") is None or not sweeper.get("storage"):
            return None
        return JobTrial(sweeper)

    def report(self, value: float, step: int) -> bool:
        """Report ``value`` at ``step``; whether the pruner stops the trial here."""
        import optuna

        trial = optuna.trial.Trial(self.study, self.trial_id)
        trial.report(value, step)
        return trial.should_prune()

    def tell(self, result: Any, output_dir: Path, metric: str | None = None) -> str:
        """Tell the trial how its job ended, read from the job dir: ``failure.json`` (the job
        failed, was interrupted or not run) is FAIL, ``pruned`` in ``metrics.json`` PRUNED;
        otherwise ``result`` (what the task returned: the optimized metric) is the value.
        ``result`` None (the job was stopped after it ran) reads ``metric`` of metrics.json.
        Return the state told (nothing when the trial had ended already)."""
        state, status, values = job_ending(output_dir, result, metric)
        return self._end(state, status, values)

    def tell_stopped(self, error: BaseException, output_dir: Path, metric: str | None) -> str:
        """Tell the trial that its job raised ``error``: as its job dir says (:meth:`tell`),
        when the job recorded how it ended (its metrics.json, or failure.json, before the
        error); else FAIL, ``interrupted`` after Ctrl-C or SIGTERM."""
        from optuna.trial import TrialState

        if any((output_dir / name).is_file() for name in ("metrics.json", "failure.json")):
            return self.tell(None, output_dir, metric)
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit, RunInterrupted))
        return self._end(TrialState.FAIL, "interrupted" if interrupted else "failed", None)

    def _end(self, state: Any, status: str, values: list[float] | None) -> str:
        trial = self.storage.get_trial(self.trial_id)
        if trial.state.is_finished():  # e.g. failed as dead by a sweep that lost sight of it
            return ""
        self.storage.set_trial_user_attr(self.trial_id, "status", status)
        self.study.tell(self.number, values, state=state, skip_if_finished=True)
        return state.name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class TellsItsTrial:
    """The task function of an Optuna sweep's jobs: the project's ``main`` around which the
    job beats its trial's heartbeat and then tells its trial how it ended. Picklable, so the
    joblib and submitit launchers carry it to their workers."""

    def __init__(self, task_function: Any) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        trial = JobTrial.of_this_job()
        if trial is None:
            return self.task_function(cfg)
        interval = float(trial.sweeper.get("heartbeat_s", 30))
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        metric = cfg.get("optimized_metric")
        with Heartbeat(trial.storage, [trial.trial_id], interval):
            try:
                result = self.task_function(cfg)
            except BaseException as exc:
                with signals_held():
                    trial.tell_stopped(exc, output_dir, metric)
                raise
        with signals_held():  # a Ctrl-C now arrives once the trial is told
            trial.tell(result, output_dir, metric)
        return result
