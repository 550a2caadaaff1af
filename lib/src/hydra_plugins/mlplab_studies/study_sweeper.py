"""mlplab's Optuna sweeper (``hparams_search=optuna``), on Optuna's ask-and-tell API.

- **Always stored.** The study lives in the sweep dir (``optuna.journal``, Optuna's journal
  file, which it advises for shared file systems), or in ``hydra.sweeper.storage``: another
  journal file, or a database URL (``sqlite:///study.db``, ``postgresql://...``). The same
  command again continues the study with ``n_trials`` more trials.
- **A job is its trial.** Job ``n`` runs trial ``n``, in the sweep dir's folder ``n``: two
  sweeps on one study (two terminals, two SLURM allocations) never share a trial number or a
  job dir. Each job reaches its trial through the storage (:mod:`mlplab.studies`): it reports
  the optimized metric at each validation, stops when the pruner says so, and tells its trial
  how it ended, whichever launcher runs it (basic, joblib, submitit).
- **Every trial ends.** A trial still RUNNING after its job returned, or whose process died
  (its heartbeat names a dead process, or stopped beating), is marked FAIL; an interrupted
  job's trial is FAIL, never a made-up value.
- **Seeded.** Trial ``n`` is sampled by the sampler seeded ``seed + n``: a sweep run again
  samples new trials, the same ones for the same history.
- After the sweep, ``study.csv`` (every trial of the study) and ``optimization_results.yaml``
  (the best trial) are written in the sweep dir.
"""

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.errors import OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from mlplab.errors import RunInterrupted
from mlplab.rundir import RunDirTaken, atomic_path, write_text
from mlplab.secrets import redact_hydra_record
from mlplab.signals import (
    raise_if_stop_requested,
    signals_held,
    stop_requested,
    stop_requests,
    stopped_by_signals,
)
from mlplab.studies import (
    HEARTBEAT,
    OPTIMIZED,
    Heartbeat,
    StudyError,
    TellsItsTrial,
    alive,
    fail_dead_trials,
    fail_trial,
    make_pruner,
    open_storage,
    owner,
    storage_url,
)
from mlplab.sweep import jobs_in_this_process, objectives, summarize

log = logging.getLogger(__name__)
STUDY_FILE = "study.csv"
RESULTS_FILE = "optimization_results.yaml"
SEARCH_SPACE = "search_space"  # a study's user attr: the search space it was made with


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    multivariate: bool = False
    constant_liar: bool = False


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class StudySweeperConfig:
    """``hydra.sweeper``: each field is an argument of :class:`StudySweeper`."""

    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    _target_: str = "hydra_plugins.mlplab_studies.study_sweeper.StudySweeper"
    sampler: Any = MISSING  # the group hydra/sweeper/sampler (tpe, random)
    direction: Any = "maximize"
    study_name: str = "mlplab"
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    pruner: Any = "none"
    params: dict[str, str] = field(default_factory=dict)
    heartbeat_s: float = 30.0
    trial: int | None = None  # set by the sweeper for each job: the trial it is


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=StudySweeperConfig, provider="mlplab")
for _name, _node in (("tpe", TPESamplerConfig), ("random", RandomSamplerConfig)):
    store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="mlplab")


class StudySweeper(Sweeper):
    """Hydra sweeper running an Optuna study (see the module docstring).

    Args:
        sampler: Optuna's sampler (its config (``hydra/sweeper/sampler=tpe|random``), its ``seed``
            offset by the trial number).
        direction: ``maximize`` or ``minimize``, or one per value for a multi-objective study.
        study_name: the study's name in its storage.
        storage: a journal file or a database URL; ``null``: ``optuna.journal`` in the sweep dir.
        n_trials: how many trials this sweep runs (added to the study's earlier ones).
        n_jobs: trials asked and launched together (the joblib launcher runs them at once).
        pruner: ``median``, ``hyperband`` or ``none``, or a mapping with ``name`` and the
            options of Optuna's pruner (``{name: median, n_warmup_steps: 2}``).
        params: the search space: ``choice(...)``, ``interval(a, b)``, ``range(a, b, step)``,
            ``tag(log, interval(a, b))``, or a fixed value.
        heartbeat_s: how often a running trial says it is alive; one that has not said so
            for four times as long (on another machine) is failed as dead.
        trial: set for each job by the sweeper.
    """

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        pruner: Any,
        params: dict[str, str] | None,
        heartbeat_s: float,
        trial: int | None = None,
    ) -> None:
        self.directions = (
            [str(d) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
        )
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.pruner, self.params = pruner, dict(params or {})
        self.heartbeat_s = float(heartbeat_s)
        for key, value, least in (
            ("n_trials", self.n_trials, 1),
            ("n_jobs", self.n_jobs, 1),
            ("heartbeat_s", self.heartbeat_s, 1.0),  # each beat is a write to the storage
        ):
            if not value >= least:
                raise StudyError(f"hydra.sweeper.{key}={value} is not allowed: at least {least}")

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.sampler_config = config.hydra.sweeper.sampler  # made again for each trial
        # The config's own search_space (what every model has, and the chosen model's part)
        # joins hydra.sweeper.params, which wins for a key in both.
        own = config.get("search_space")
        if own is not None:
            self.params = {**OmegaConf.to_container(own, resolve=True), **self.params}
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=TellsItsTrial(task_function), config=config
        )
        self.optuna_pruner = make_pruner(self.pruner)  # a bad one: one line before any job
        self.metrics = objectives(config)
        if len(self.metrics) != len(self.directions):
            raise StudyError(
                f"hydra.sweeper.direction has {len(self.directions)} direction(s) for "
                f"{len(self.metrics)} optimized_metric(s): give one direction per metric "
                "(optimized_metric=[a,b] hydra.sweeper.direction=[maximize,minimize])"
            )
        if self.pruner not in (None, "none") and len(self.directions) > 1:
            raise StudyError("hydra.sweeper.pruner: Optuna prunes single-objective studies only")

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space, fixed = search_space(self.params, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        url = storage_url(self.storage, sweep_dir)
        storage = open_storage(url)
        study = self._open_study(optuna, storage, space, url)
        dead = fail_dead_trials(study, 4 * self.heartbeat_s)
        if dead:
            log.info(
                "trials %s had died (their processes are gone): ended as their job dirs say", dead
            )
        refuse_foreign_job_dirs(sweep_dir, study)
        earlier = len(study.trials)
        if earlier:
            log.info("study %s continues after its %d trials (%s)", self.study_name, earlier, url)
        # As Hydra's sweepers write it, but with its secrets redacted (mlplab.secrets).
        saved = redact_hydra_record(OmegaConf.to_container(self.config, resolve=False))
        write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(OmegaConf.create(saved)))
        launched: list[Any] = []
        stopped = False
        try:
            # A signal asks the sweep to stop: its running job stops (a training at its next
            # batch boundary), and the sweep stops before it asks for another trial. Jobs in
            # processes of their own (submitit's) go on without it: the sweep stops at once.
            stops = (
                stop_requests("the sweep")
                if jobs_in_this_process(self.config)
                else stopped_by_signals("the sweep")
            )
            with stops:
                self._run_trials(study, space, fixed, sweep_dir, url, launched)
                raise_if_stop_requested("the sweep")
                self._draw_best_pictures(study, sweep_dir)
                raise_if_stop_requested("the sweep")
        except RunInterrupted:
            stopped = True
            raise
        finally:
            # Stopped (Ctrl-C, SIGTERM, an error): a trial whose process is gone ends as FAIL;
            # a job that goes on elsewhere (a SLURM job) tells its own trial when it ends.
            with signals_held():
                self._fail_unended(study, [t for t, _ in launched], "interrupted", alive_ok=True)
                self._write_results(study, sweep_dir)
                if stopped:  # Hydra's end of a multirun (the summary) does not come
                    print(f"sweep summary: {summarize(sweep_dir)['md']}", file=sys.stderr)

    def _run_trials(
        self, study: Any, space: dict, fixed: list, sweep_dir: Path, url: str, launched: list
    ) -> None:
        """Ask, launch and end batches of trials until ``n_trials`` are launched (each one
        into ``launched`` once asked) or the sweep stops."""
        from mlplab.sweep import ABANDONED, THIS_SWEEPS_JOBS

        per_job_dir = _default_subdir(self.config)
        while len(launched) < self.n_trials and not stop_requested() and not ABANDONED:
            size = min(self.n_jobs, self.n_trials - len(launched))
            batch: list[Any] = []
            for _ in range(size):
                batch.append(self._ask(study, space, sweep_dir, per_job_dir))
                launched.append(batch[-1])
            jobs = []
            for trial, values in batch:
                job = [*fixed, *(f"{k}={v}" for k, v in values.items())]
                job += [f"hydra.sweeper.trial={trial.number}"]
                job += [f"hydra.sweeper.storage={_quoted(url)}"]
                job += [f"hydra.sweep.subdir={trial.number}"] * per_job_dir
                jobs.append(job)
                THIS_SWEEPS_JOBS.append(str(trial.number))
            ids = [trial._trial_id for trial, _ in batch]
            # The sweep beats for its trials until their jobs beat for themselves: a job
            # waiting in a SLURM queue is alive while the sweep waiting for it is.
            with Heartbeat(study._storage, ids, self.heartbeat_s, only_own=True):
                self.launcher.launch(jobs, initial_job_idx=batch[0][0].number)
            # The launcher returned: its jobs are over, and one that did not tell its
            # trial how it ended was killed (or never started).
            self._fail_unended(study, [t for t, _ in batch], "ended without a result")

    def _draw_best_pictures(self, study: Any, sweep_dir: Path) -> None:
        """The report pictures of the study's best trial (each of them, for several
        objectives), which its job left for now (``callbacks.report.pictures=best``)."""
        if not _default_subdir(self.config):
            return  # job dirs named otherwise: which one holds the trial is not known
        from mlplab.report import DEFERRED, draw_pictures

        try:
            best = [study.best_trial] if len(self.directions) == 1 else study.best_trials
        except ValueError:  # no trial completed
            return
        for trial in best:
            report = sweep_dir / str(trial.number) / "report.md"
            if not report.is_file() or DEFERRED not in report.read_text():
                continue  # drawn already (an earlier sweep of the study), or not left for now
            try:  # a signal waits for the end (a second or so): no half-drawn report
                with signals_held():
                    drawn = draw_pictures(report.parent)
            except RunInterrupted:  # that signal, arrived now (jobs elsewhere): the sweep stops
                raise
            except Exception as exc:  # the sweep's results stand without its pictures
                log.warning("the best trial's pictures could not be drawn: %s", exc)
                continue
            log.info("best trial %d: its pictures %s", trial.number, ", ".join(map(str, drawn)))

    # -- the study ----------------------------------------------------------------------------
    def _open_study(self, optuna: Any, storage: Any, space: dict[str, Any], url: str) -> Any:
        """Create the study, or load it; refuse one made with other directions or another
        search space (its trials would not be comparable)."""
        from optuna.distributions import distribution_to_json

        pruner = self.optuna_pruner
        try:  # an existing study is only read: a refused sweep leaves it as it was
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        except KeyError:
            try:  # (another sweep may create it at the same moment: then this one loads it)
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    directions=self.directions,
                    pruner=pruner,
                    load_if_exists=True,
                )
            except ValueError as exc:
                raise StudyError(f"study {self.study_name} in {url}: {exc}") from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise StudyError(
                f"study {self.study_name} in {url} was made to {' and '.join(stored)}, not to "
                f"{' and '.join(self.directions)}: keep its direction, or choose another study "
                "(hydra.sweeper.study_name, hydra.sweeper.storage or hydra.sweep.dir)"
            )
        made_for = study.user_attrs.get(OPTIMIZED)
        if made_for is None:
            study.set_user_attr(OPTIMIZED, self.metrics)
        elif made_for != self.metrics:
            raise StudyError(
                f"study {self.study_name} in {url} optimizes {', '.join(made_for)}, not "
                f"{', '.join(self.metrics)}: its values would not compare; keep its "
                "optimized_metric, or choose another study (hydra.sweeper.study_name, "
                "hydra.sweeper.storage or hydra.sweep.dir)"
            )
        wanted = {k: json.loads(distribution_to_json(d)) for k, d in space.items()}
        made_with = study.user_attrs.get(SEARCH_SPACE)
        if made_with is None:
            study.set_user_attr(SEARCH_SPACE, wanted)
        elif made_with != wanted:
            changed = sorted(set(made_with) ^ set(wanted)) or sorted(
                k for k in wanted if made_with[k] != wanted[k]
            )
            raise StudyError(
                f"study {self.study_name} in {url} was made with another search space "
                f"({', '.join(changed)} changed): its trials would not compare; keep its "
                "params, or choose another study (hydra.sweeper.study_name, "
                "hydra.sweeper.storage or hydra.sweep.dir)"
            )
        return study

    def _ask(
        self, study: Any, space: dict[str, Any], sweep_dir: Path, claim: bool
    ) -> tuple[Any, dict]:
        """A new trial (its number unique in the study, whoever else asks at once), its job
        dir claimed (``claim``: folder ``n`` of the sweep dir, made here, so that no other
        sweep's job can have it), and its params sampled by the sampler seeded
        ``seed + number``."""
        import optuna

        asked = study.ask()
        number, trial_id = asked.number, asked._trial_id
        try:
            study._storage.set_trial_system_attr(trial_id, HEARTBEAT, owner())
            seed = self.sampler_config.get("seed")
            extra = {} if seed is None else {"seed": int(seed) + number}
            study.sampler = instantiate(self.sampler_config, **extra)
            trial = optuna.trial.Trial(study, trial_id)  # the sampler sees it from the start
            values = {name: _suggest(trial, name, d) for name, d in space.items()}
            if claim:
                job_dir = sweep_dir / str(number)
                try:
                    job_dir.mkdir(parents=True)
                except FileExistsError:
                    raise RunDirTaken(
                        f"{job_dir}, the job dir of trial {number}, is another sweep's: "
                        "choose a new hydra.sweep.dir"
                    ) from None
                study._storage.set_trial_user_attr(trial_id, "job_dir", str(job_dir))
        except BaseException:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            raise
        return trial, {name: _as_override(value) for name, value in values.items()}

    def _fail_unended(
        self, study: Any, trials: list[Any], status: str, alive_ok: bool = False
    ) -> None:
        """Mark FAIL the trials still RUNNING: their jobs ended without telling them (killed,
        or never started). With ``alive_ok``, not those another living process runs."""
        from optuna.trial import TrialState

        storage = study._storage
        for trial in trials:
            frozen = storage.get_trial(trial._trial_id)
            if frozen.state != TrialState.RUNNING:
                continue
            beat = frozen.system_attrs.get(HEARTBEAT, {})
            others = beat.get("pid") != os.getpid() or beat.get("host") != owner()["host"]
            if alive_ok and others and alive(beat, 4 * self.heartbeat_s):
                continue
            fail_trial(storage, trial._trial_id, status)

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        """``study.csv`` (every trial of the study) and the best trial, in the sweep dir."""
        frame = study.trials_dataframe(attrs=_COLUMNS)
        with atomic_path(sweep_dir / STUDY_FILE) as tmp:
            frame.to_csv(tmp, index=False)
        states = frame["state"].value_counts().to_dict() if len(frame) else {}
        log.info(
            "study %s: %d trials in all (%s): %s",
            self.study_name,
            len(frame),
            ", ".join(f"{n} {s.lower()}" for s, n in states.items()),
            sweep_dir / STUDY_FILE,
        )
        best: dict[str, Any] = {"name": "optuna", "study_name": self.study_name}
        try:
            if len(self.directions) == 1:
                best |= {"best_params": study.best_params, "best_value": study.best_value}
            else:
                best["solutions"] = [
                    {"params": t.params, "values": t.values} for t in study.best_trials
                ]
        except ValueError:  # no trial completed yet
            best["best_value"] = None
        write_text(sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(best)))


_COLUMNS = (
    "number",
    "value",
    "datetime_start",
    "datetime_complete",
    "duration",
    "params",
    "user_attrs",
    "state",
)


# -- the search space -----------------------------------------------------------------------
def search_space(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The distributions of ``hydra.sweeper.params`` and of the command line's sweeps, and the
    command line's fixed overrides (``key=value``, passed to every job)."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    overrides += parser.parse_overrides([a for a in arguments if not a.startswith("hydra.")])
    space: dict[str, Any] = {}
    fixed: list[str] = [a for a in arguments if a.startswith("hydra.")]
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = _distribution(override)
            fixed = [f for f in fixed if not f.startswith(f"{key}=")]
        else:
            space.pop(key, None)  # a fixed value on the command line wins over the search
            fixed = [f for f in fixed if not f.startswith(f"{key}=")]
            fixed.append(f"{key}={override.get_value_element_as_str()}")
    return space, fixed


def _distribution(override: Override) -> Any:
    from optuna import distributions as d

    value, key = override.value(), override.get_key_element()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        elements = value.list
        texts = list(override.sweep_string_iterator())
        choices = [
            e if e is None or isinstance(e, (bool, int, float, str)) else t
            for e, t in zip(elements, texts, strict=True)
        ]
        return d.CategoricalDistribution(choices)
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return d.IntDistribution(value.start, value.end, log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if isinstance(value, RangeSweep) and not log_scale:
        steps = list(override.sweep_iterator())
        if steps and all(isinstance(s, int) for s in steps):
            return d.IntDistribution(steps[0], steps[-1], step=int(value.step))
        if steps:
            return d.FloatDistribution(steps[0], steps[-1], step=float(value.step))
    raise StudyError(
        f"hydra.sweeper.params.{key}: {override.input_line}: use choice(...), interval(a, b), "
        "range(a, b, step) or tag(log, interval(a, b))"
    )


def _suggest(trial: Any, name: str, distribution: Any) -> Any:
    from optuna import distributions as d

    if isinstance(distribution, d.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, d.IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_float(
        name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
    )


def _as_override(value: Any) -> str:
    """A sampled value as the command line writes it: a choice as it was written."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, str):
        try:  # a plain word, or the text of a list or dict choice: as it is
            parsed = OverridesParser.create().parse_override(f"key={value}").value()
            if parsed == value or isinstance(parsed, (list, dict)):
                return value
        except OverrideParseException:  # only that: a signal's RunInterrupted goes through
            pass
        return _quoted(value)
    return str(value)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default_subdir(config: DictConfig) -> bool:
    """Whether job dirs are named by Hydra's job number (then they take the trial number)."""
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    return str(sweep.get("subdir")) == "${hydra.job.num}"


def refuse_foreign_job_dirs(sweep_dir: Path, study: Any) -> None:
    """A sweep dir may hold this study's job dirs (folder ``n`` for trial ``n``), never a job
    dir that is not one of its trials: another sweep's, which a new trial would overwrite."""
    known = {t.number for t in study.get_trials(deepcopy=False)}
    foreign = sorted(
        int(p.parent.name)
        for p in sweep_dir.glob("*/.hydra")
        if p.parent.name.isdigit() and int(p.parent.name) not in known
    )
    if foreign:
        raise RunDirTaken(
            f"{sweep_dir} holds job dirs {', '.join(map(str, foreign[:5]))} of another sweep, "
            "which are no trials of this study: choose a new hydra.sweep.dir (or the study "
            "storage those jobs belong to)"
        )
