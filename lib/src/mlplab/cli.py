"""Run a task for a command-line entry point: config checked first, user errors as one line."""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from mlplab.config import (
    ENTRY_CONF_DIR,
    check_required,
    conf_dir,
    forget_project,
    project_target,
    validate_config,
)
from mlplab.errors import (
    ConfigError,
    DiskFullError,
    InterruptedWhenDone,
    JobRequeued,
    MlplabError,
    RunInterrupted,
)
from mlplab.instantiate import built_parts, locate
from mlplab.resume import register_resolvers
from mlplab.rundir import discard_unstarted_run, unlock_all
from mlplab.signals import STOP_REQUESTED, stop_requested, stopped_by_signals
from mlplab.speedups import exit_without_teardown
from mlplab.stored import forget_trusted
from mlplab.sweep import (
    ABANDONED,
    FAILED_JOBS,
    ddp_rank_argv,
    forget_earlier_sweeps,
    in_multirun,
    in_parallel_job,
    in_submitit_job,
    objectives,
    record_failure,
    summarize_sweep,
    sweep_stopped,
)
from mlplab.trainer_args import closest, known_arguments

register_resolvers()  # before Hydra composes conf/train.yaml, which uses them


TASK_STARTED = False  # set once Hydra has composed the config and the task runs


def entry_point(main: Callable[[], object], config_name: str) -> None:
    """Run a script's ``@hydra.main`` function as a command: Hydra's own errors (an unknown
    key or group option, an override that does not parse) as one ``error:`` line and exit 2;
    a DDP rank > 0 of a multirun job runs that job only; a successful run skips the
    interpreter's teardown (:func:`mlplab.speedups.exit_without_teardown`).

    ``HYDRA_FULL_ERROR=1`` set by the user keeps Hydra's full tracebacks.
    """
    _begin_command()
    sys.argv = ddp_rank_argv(sys.argv)
    script = getattr(main, "__wrapped__", main).__code__.co_filename
    ENTRY_CONF_DIR[:] = [Path(script).resolve().parent / "conf"]  # config errors read it
    # Ctrl-C and SIGTERM as one line (exit 130, 143) where the command is: the file being
    # written is dropped on the way out (mlplab.rundir). train.py stops at a batch boundary
    # instead (mlplab.checkpoints).
    stops = (
        stopped_by_signals(f"{config_name}.py", ": its unfinished files were not written")
        if config_name != "train"
        else contextlib.nullcontext()
    )
    try:
        with stops:
            _run_entry_point(main, config_name)
    finally:
        unlock_all()  # the process may go on (mlplab.testing.run_command): let the dirs go


def _begin_command() -> None:
    """What a command learns about itself starts empty, as in a new process: a process may
    run several (the tests run them in theirs, :func:`mlplab.testing.run_command`)."""
    global TASK_STARTED
    TASK_STARTED = False
    STOP_REQUESTED.clear()
    forget_earlier_sweeps()
    forget_trusted()
    forget_project()


def _run_entry_point(main: Callable[[], object], config_name: str) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's own test of it
        exit_without_teardown(lambda: _sweep_status(main))
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: reworded here
    try:
        exit_without_teardown(lambda: _sweep_status(main))
    except Exception as raised:
        # Hydra writing its own files (.hydra/, the log); mlplab's error in a Hydra callback or
        # a plugin that Hydra built before the task ran (wrapped in its InstantiationException)
        exc = _disk_full(raised) or _mlplab_cause(raised)
        if isinstance(exc, MlplabError):
            print(f"error: {shortened(str(exc))}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        message = hydra_error_line(exc, config_name, sys.argv[1:])
        if message is None and not TASK_STARTED:  # Hydra failed before the run began
            first = (str(exc).strip().splitlines() or [""])[0]
            # The config composed, but submitit could not start a job (sbatch refused it)
            frames = traceback.extract_tb(exc.__traceback__)
            submitting = any(f"{os.sep}submitit{os.sep}" in frame.filename for frame in frames)
            stage = (
                "submitit could not start the jobs" if submitting else "cannot compose the config"
            )
            message = f"{stage}: {type(exc).__name__}: {first}"
        if message is None:
            raise
        print(f"error: {shortened(message)}", file=sys.stderr)
        raise SystemExit(2) from None


def _sweep_status(main: Callable[[], object]) -> None:
    """Run ``main``; a multirun in which any job did not succeed exits with status 1 (after
    its summary: :class:`mlplab.sweep.SweepSummary`)."""
    main()
    stopped = stop_requested()
    if stopped is not None:  # a sweep stopped by a signal: 130 (Ctrl-C) or 143 (SIGTERM)
        raise SystemExit(128 + stopped)
    if FAILED_JOBS:
        raise SystemExit(1)


def shortened(message: str, limit: int = 300) -> str:
    """``message`` on one line, each overlong word (a 100,000-character value) cut short."""
    words = " ".join(message.split()).split(" ")
    return " ".join(
        w if len(w) <= limit else f"{w[:limit]}... ({len(w):,} characters)" for w in words
    )


def hydra_error_line(exc: BaseException, config_name: str, overrides: list[str]) -> str | None:
    """One actionable line for a Hydra composition error, or None for any other error."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    syntax = _yaml_syntax_error(exc)
    if syntax is not None:
        return syntax
    if isinstance(exc, OSError) and exc.filename:  # the run dir cannot be made (Hydra's)
        return (
            f"cannot create {shortened(str(exc.filename), 120)}: {exc.strerror}; choose a "
            "writable, shorter run dir with hydra.run.dir=... (hydra.sweep.dir=... with -m)"
        )
    text = str(exc).strip()
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        if group and exc.options:
            near = closest(option, list(exc.options))
            hint = f" (did you mean {group}={near}?)" if near else ""
            return (
                f"{group}={option} is not an option of {group}{hint}: choose one of "
                + ", ".join(exc.options)
            )
        return text.splitlines()[0]
    if isinstance(exc, OverrideParseException):
        return _override_parse_line(text.splitlines()[0], overrides)
    if not isinstance(exc, ConfigCompositionException):
        return None
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown and unknown.group(1).startswith("hydra.sweeper."):
        return (
            f"{unknown.group(1)} is no setting of this sweep's sweeper: the study's settings "
            "(pruner, storage, n_trials, ...) belong to the Optuna sweeper: add "
            "hparams_search=optuna"
        )
    if unknown and "not in struct" in str(exc.__cause__ or ""):
        return _unknown_key_line(unknown.group(1), config_name, overrides)
    existing = re.search(r"An item is already at '([^']+)'", text)
    if existing:
        key = existing.group(1)
        return f"{key} is already a config key: set it without the + ({key}=...)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _override_parse_line(first_line: str, overrides: list[str]) -> str:
    """An override that does not parse; a word without ``=`` after a ``key=value`` is most
    likely the rest of a value with a space that the shell split: say to quote it."""
    bad = re.search(r"Error parsing override '(.*)'", first_line)
    word = bad.group(1) if bad else None
    if word is not None and "=" not in word and word in overrides:
        before = overrides[: overrides.index(word)]
        if before and "=" in before[-1]:
            joined = f"{before[-1]} {word}"
            return (
                f"cannot parse the overrides: {word!r} is no key=value; if it belongs to "
                f"{before[-1]!r}, quote the value with its space: '{joined}'"
            )
    return f"cannot parse the overrides: {first_line} (see python train.py --help)"


def _yaml_syntax_error(exc: BaseException) -> str | None:
    """A YAML file that does not parse (a config of conf/), named with its line and column."""
    import yaml

    for seen in _chain(exc):
        mark = getattr(seen, "problem_mark", None)
        if isinstance(seen, yaml.MarkedYAMLError) and mark is not None:
            where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}"
            return f"{where}: YAML syntax error: {seen.problem}; fix that line"
    return None


def _unknown_key_line(key: str, config_name: str, overrides: list[str]) -> str:
    parent, _, name = key.rpartition(".")
    if parent == "trainer":
        near = closest(name, known_arguments())
        hint = f"; did you mean {near}?" if near else ""
        return f"{key} is not a Trainer argument{hint}"
    siblings = _keys_at(parent, config_name, [o for o in overrides if key not in o])
    near = closest(name, siblings)
    if near:
        return f"{key} is not a config key; did you mean {parent + '.' if parent else ''}{near}?"
    return f"{key} is not a config key (to add a new key: +{key}=...)"


def _keys_at(parent: str, config_name: str, overrides: list[str]) -> list[str]:
    """The keys of the composed config at ``parent`` (the error path only: composes again)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [o for o in overrides if "=" in o and not o.startswith("-")]  # no Hydra flags
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # another problem in the overrides: no suggestion then
        return []
    return [str(k) for k in node] if OmegaConf.is_dict(node) else []


def run_task(cfg: DictConfig, task: str, validate: bool = True) -> dict[str, Any]:
    """Run ``task`` (``"module:function"``; ``".train:train"`` is a module of the project's
    package, see :func:`mlplab.config.project_target`) on ``cfg`` and return its metrics.

    The config is validated before the task's module is imported, so a typo is reported in
    well under a second instead of after torch and Lightning have loaded. A
    :class:`MlplabError` is printed as ``error: ...`` on stderr and exits with status 2
    (130 after Ctrl-C, 143 after SIGTERM, with a checkpoint to resume from).
    """
    global TASK_STARTED
    TASK_STARTED = True
    # stopped by Ctrl-C, SIGTERM or an error that all jobs share: this job does not start
    if sweep_stopped() or stop_requested() is not None or ABANDONED:
        why = ABANDONED[0] if ABANDONED else "the sweep was stopped"
        record_failure(cfg.output_dir, RunInterrupted(why, 130), "not run")
        return _unfinished(cfg, "not run")
    try:
        refuse_a_sweeper_without_multirun()
        if validate:
            validate_config(cfg)
        else:
            check_required(cfg)
            refuse_unread_keys()
        module_name, function_name = task.split(":")
        package = project_target() if module_name.startswith(".") else None
        function = getattr(importlib.import_module(module_name, package), function_name)
        quiet_third_party_output(verbose=bool(cfg.get("verbose", False)))
        metrics = function(cfg)
        require_optimized_metric(metrics, objectives(cfg))
        return metrics
    except Exception as raised:
        exc = (
            _disk_full(raised)
            or _out_of_memory(raised)
            or _lightning_config_error(raised)
            or _shape_mismatch(raised, cfg)
            or _constructor_error(raised, cfg)
            or _mlplab_cause(raised)
        )
        # In a sweep one failing job (NaN loss, out-of-range value, a bug) must not abort the
        # others: it is recorded in its job dir and the sweeper gets the worst value. Ctrl-C or
        # SIGTERM is no job failure: it stops the sweep, with the command that resumes the job.
        # A SLURM job (submitit) is its own process: its SIGTERM (scancel) stops that job only.
        # A requeued one continues when it restarts: no result for the sweep yet.
        # A joblib worker's job returns, so that joblib waits for the other jobs to save
        # their checkpoints too; the sweep's own process then ends it (mlplab.sweep._StopJobs).
        ends_process = isinstance(exc, RunInterrupted) and (
            isinstance(exc, JobRequeued) or not (in_submitit_job() or in_parallel_job())
        )
        if isinstance(exc, InterruptedWhenDone) and in_multirun() and not ends_process:
            print(f"job complete, then stopped: {shortened(str(exc))}", file=sys.stderr)
            return json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
        if in_multirun() and not ends_process and not cfg.get("sweep", {}).get("fail_fast", False):
            status = "interrupted" if isinstance(exc, RunInterrupted) else "failed"
            record_failure(cfg.output_dir, exc, status)
            goes_on = "" if in_parallel_job() and status == "interrupted" else ", sweep continues"
            if isinstance(exc, UnrecordedMetric):
                ABANDONED[:] = [f"an earlier job of this sweep found: {exc}"]
                goes_on = ", sweep stops: every job would fail so"
            print(
                f"error: job {status}{goes_on}: {type(exc).__name__}: {shortened(str(exc))}",
                file=sys.stderr,
            )
            return _unfinished(cfg, status)
        if ends_process and in_multirun() and not isinstance(exc, JobRequeued):
            # The sweep stops here: its summary says so (this job interrupted, or complete,
            # the rest not run), and the last line says how to resume this job.
            if not isinstance(exc, InterruptedWhenDone):
                record_failure(cfg.output_dir, exc, "interrupted")
            print(f"sweep summary: {summarize_sweep()}", file=sys.stderr)
        if isinstance(exc, MlplabError):
            if not in_multirun():  # refused before it wrote anything: no dir left behind
                discard_unstarted_run(cfg.output_dir, _log_name())
            print(f"error: {shortened(str(exc))}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        raise


def _log_name() -> str:
    """The file Hydra logs this job to: ``<job name>.log`` (train.log, eval.log, ...)."""
    from hydra.core.hydra_config import HydraConfig

    return f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else ""


class UnrecordedMetric(ConfigError):
    """The metric a sweep optimizes is none that its runs record, or the sweep would take
    its worse values for better: every job of the sweep would fail so."""


def _unfinished(cfg: DictConfig, status: str) -> dict[str, Any]:
    """What a job that did not finish returns: its status, and ``sweep.failed_value`` for
    each optimized metric."""
    return {"status": status, **dict.fromkeys(objectives(cfg), cfg.sweep.failed_value)}


def require_optimized_metric(metrics: dict[str, Any], names: list[str]) -> None:
    """In a sweep, refuse a run whose metrics lack one that its sweeper optimizes
    (``optimized_metric``): its job would return nothing to compare. One line lists the
    metrics the run does record."""
    missing = [name for name in names if name not in metrics]
    if not in_multirun() or metrics.get("status"):
        return
    if not missing:
        _refuse_the_opposite_direction(metrics, names)
        return
    name = missing[0]
    recorded = sorted(k for k, v in metrics.items() if "/" in k and isinstance(v, int | float))
    near = closest(name, recorded)
    hint = f"did you mean {near}? " if near else ""
    raise UnrecordedMetric(
        f"optimized_metric={name} is not a metric this run records: {hint}it records "
        f"{', '.join(recorded) or 'none'}"
    )


def _refuse_the_opposite_direction(metrics: dict[str, Any], names: list[str]) -> None:
    """A study whose ``hydra.sweeper.direction`` takes an optimized metric the wrong way
    (``maximize`` an error rate) would keep the worst trials: refused in one line, when the
    run recorded which way its metric is better (``better`` in metrics.json)."""
    from hydra.core.hydra_config import HydraConfig

    given = HydraConfig.get().sweeper.get("direction") if HydraConfig.initialized() else None
    if given is None:  # a grid (Hydra's basic sweeper) compares nothing
        return
    directions = [str(d) for d in given] if OmegaConf.is_list(given) else [str(given)]
    better = metrics.get("better") or {}
    for name, direction in zip(names, directions, strict=False):
        side = better.get(name.removesuffix("_best"))
        wanted = {"higher": "maximize", "lower": "minimize"}.get(str(side))
        if wanted is not None and direction != wanted:
            raise UnrecordedMetric(
                f"optimized_metric={name} is better {side} (torchmetrics' higher_is_better), "
                f"but hydra.sweeper.direction={direction}: the study would keep its worst "
                f"trials; set hydra.sweeper.direction={wanted}"
            )


def refuse_a_sweeper_without_multirun() -> None:
    """A config that chooses a sweeper (``hparams_search=optuna``) run without ``-m`` would
    train once with the defaults: refused, saying to add ``-m``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or in_multirun():
        return
    sweeper = str(HydraConfig.get().sweeper.get("_target_", ""))
    if sweeper and not sweeper.endswith("BasicSweeper"):
        raise ConfigError(
            f"this config chooses a sweeper ({sweeper.rsplit('.', 1)[-1]}), which searches only "
            "in a multirun: add -m (python train.py -m ...), or leave out the option that chose "
            "it to train once"
        )


def refuse_unread_keys() -> None:
    """Refuse a key added on the command line (``+model.hidden_sizes=[64]``) that the
    command never reads: eval, predict and export use the checkpoint's model as trained,
    and a silently ignored override would say otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    entry = OmegaConf.load(conf_dir() / f"{hydra_cfg.job.config_name}.yaml")
    defaults = cast(dict, OmegaConf.to_container(entry)).get("defaults", [])
    groups = {str(k).split("@")[0] for d in defaults if isinstance(d, dict) for k in d}
    read = {str(k) for k in entry if k not in ("defaults", "hydra")} | groups
    read |= {"trusted_packages"}  # trusted: default puts it at the top
    for override in hydra_cfg.overrides.task:
        if not override.startswith("+"):
            continue
        key = override.lstrip("+").split("=", 1)[0]
        if key.split(".")[0] not in read:
            command = hydra_cfg.job.name
            raise ConfigError(
                f"{override}: {command}.py reads no {key}: it uses the checkpoint's model and "
                f"config as trained (its own keys: {', '.join(sorted(read))})"
            )


# Libraries whose info lines go to train.log only (unless verbose=true).
LOG_FILE_ONLY = ("lightning", "mlflow", "alembic")


def _no_lightning_info(record: logging.LogRecord) -> bool:
    if record.name.startswith(LOG_FILE_ONLY) and record.levelno < logging.WARNING:
        return False
    # Lightning warns where it only informs: a new MLflow experiment is made as asked.
    return not (record.name.endswith("loggers.mlflow") and "Creating it" in record.getMessage())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what lies behind it (Lightning and Hydra wrap what a run raised)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _disk_full(exc: BaseException) -> DiskFullError | None:
    """A one-line error for a full disk anywhere behind ``exc``."""
    for seen in _chain(exc):
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            where = seen.filename or "the run's files"
            return DiskFullError(
                f"no space left on the device writing {where}: free some space, or point the "
                "run dir at another disk (hydra.run.dir=...)"
            )
    return None


def _lightning_config_error(exc: BaseException) -> ConfigError | None:
    """Lightning's ``MisconfigurationException`` (an impossible Trainer setting, e.g. a
    ``limit_val_batches`` fraction of less than one batch) as a one-line config error."""
    for seen in _chain(exc):
        if type(seen).__name__ == "MisconfigurationException":
            lines = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
            return ConfigError(" ".join(lines) or "Lightning refused the trainer settings")
    return None


def _out_of_memory(exc: BaseException) -> ConfigError | None:
    """A one-line error for a model or batch too large for memory."""
    for seen in _chain(exc):
        text = str(seen)
        if (
            isinstance(seen, MemoryError)
            or "can't allocate memory" in text
            or ("out of memory" in text.lower() and isinstance(seen, RuntimeError))
        ):
            return ConfigError(
                "out of memory building or training the model: use smaller "
                "model.hidden_sizes or data.batch_size (or a machine with more memory)"
            )
    return None


def _constructor_error(exc: BaseException, cfg: DictConfig) -> ConfigError | None:
    """What a constructor raised while building a part from the config (a network, a loss, a
    callback; an optimizer from its partial as the module builds it), as one line naming the
    config key and the constructor's message: an unexpected argument, or its own check of a
    value (SGD's ``Invalid momentum value``)."""
    chain = list(_chain(exc))
    if any(isinstance(seen, MlplabError) for seen in chain):
        return None  # mlplab's own line says more
    built = [seen for seen in chain if type(seen).__name__ == "InstantiationException"]
    cause: BaseException | None = None
    if built:
        innermost = built[-1]
        cause = innermost.__cause__ or innermost.__context__
        found = re.search(r"target '([^']+)'", str(innermost))
        target = found.group(1) if found else "?"
        full_key = re.search(r"full_key: (\S+)", str(built[0]))
        key = _part_key(cfg, target) or (full_key.group(1) if full_key else target)
    else:  # raised by a partial's call, e.g. the optimizer's, inside the training
        part = _raising_part(exc, cfg)
        if part is None:
            return None
        key, target = part
        cause = exc
    if isinstance(cause, TypeError):
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if unexpected:
            return _unexpected_argument(key, target, unexpected.group(1))
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(innermost)
    return ConfigError(f"{key} ({target}) cannot be built: {reason}")


def _raising_part(exc: BaseException, cfg: DictConfig) -> tuple[str, str] | None:
    """The config key and target of the part whose constructor raised ``exc`` (a
    ``TypeError`` or ``ValueError`` from building it), if a config node builds it."""
    if not isinstance(exc, TypeError | ValueError):
        return None
    unexpected = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword", str(exc))
    names = [unexpected.group(1)] if unexpected else []
    tb = exc.__traceback__
    while tb is not None:  # the innermost __init__ that raised it, of a class a node names
        frame = tb.tb_frame
        self = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        if self is not None:
            names.insert(0, type(self).__name__)
        tb = tb.tb_next
    return next(filter(None, (_part_of_class(cfg, name) for name in names)), None)


def _built_parts(cfg: DictConfig) -> dict[str, str]:
    """The config's parts (key: target), their targets resolved (``${project:...}``) where
    the config resolves."""
    try:
        return built_parts(OmegaConf.to_container(cfg, resolve=True))
    except Exception:  # an interpolation that resolves only in Hydra's run: as written
        return built_parts(cfg)


def _part_key(cfg: DictConfig, target: str) -> str | None:
    """The shortest config key whose node builds ``target``."""
    keys = [key for key, built in _built_parts(cfg).items() if built == target]
    return min(keys, key=len) if keys else None


def _part_of_class(cfg: DictConfig, name: str) -> tuple[str, str] | None:
    """The config key and target of the part built from a class called ``name``."""
    targets = sorted({t for t in _built_parts(cfg).values() if t.rsplit(".", 1)[-1] == name})
    key = _part_key(cfg, targets[0]) if targets else None
    return (key, targets[0]) if key is not None else None


def _unexpected_argument(key: str, target: str, argument: str) -> ConfigError:
    """``key.argument`` is not an argument of ``target``: said with the ones it takes."""
    import inspect

    try:
        parameters = [
            name
            for name, p in inspect.signature(locate(target)).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "params"
        ]
    except (ValueError, TypeError, ImportError, AttributeError):
        parameters = []
    near = closest(argument, parameters)
    hint = f"did you mean {key}.{near}? " if near else ""
    takes = f"it takes {', '.join(parameters)}" if parameters else "see its documentation"
    return ConfigError(
        f"{key}.{argument} is not an argument of {target}: {hint}({takes}; remove it with "
        f"~{key}.{argument})"
    )


# What torch says when a layer gets a tensor of a shape it cannot take.
SHAPE_ERROR = re.compile(
    r"shapes cannot be multiplied|Expected \d+D .*input to|expected input\[|to have \d+ "
    r"channels|size mismatch|must match the size of tensor|normalized_shape"
)


def _shape_mismatch(exc: BaseException, cfg: DictConfig) -> ConfigError | None:
    """A network given inputs of a shape it cannot take (an own CNN on a table, an MLP sized
    for other data), as one line naming the config key that built the network, the inputs'
    shape and torch's words: which shapes met."""
    seen = next((e for e in _chain(exc) if isinstance(e, RuntimeError)), None)
    if seen is None or not SHAPE_ERROR.search(str(seen)):
        return None
    import torch  # loaded already: torch raised it
    from lightning import LightningModule
    from torch import nn

    tb, network = seen.__traceback__, None
    while tb is not None and network is None:  # the outermost forward of a plain nn.Module
        frame = tb.tb_frame
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
        if isinstance(owner, nn.Module) and not isinstance(owner, LightningModule):
            network = owner, [v for v in frame.f_locals.values() if isinstance(v, torch.Tensor)]
        tb = tb.tb_next
    if network is None:
        return None
    module, tensors = network
    part = _part_of_class(cfg, type(module).__name__)
    built = f"{part[0]} ({part[1]})" if part else f"the network {type(module).__name__}"
    shape = f" of shape {list(tensors[0].shape)}" if tensors else ""
    words = " ".join(str(seen).split())
    return ConfigError(
        f"{built} cannot take the data's inputs{shape} (batch first): {words}; choose a "
        "network built for the data's input shape"
    )


def _mlplab_cause(exc: BaseException) -> BaseException:
    """The MlplabError behind ``exc``, if any: Hydra wraps what a constructor raises (a
    missing checkpoint, a bad model argument) in its own exception, once per nesting level,
    and OmegaConf raises its own error while handling a resolver's (``${project:...}``)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, MlplabError):
        cause = cause.__cause__ or cause.__context__
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
    ignore_harmless_warnings()


def ignore_harmless_warnings() -> None:
    """Filter out the warnings of Lightning and torch that say nothing to act on here."""
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; harmless, but noisy.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The module logs sums already reduced across DDP processes, so no further sync is due.
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed")
    # mlplab's data modules resume mid-epoch exactly (the batches done are in the checkpoint;
    # the resume tests compare every metric with an uninterrupted run): the warning is wrong.
    warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable")
    # Lightning's SLURM detection warns on every run where `srun` is installed but the run
    # is not a SLURM job: nothing to act on (a SLURM job is detected and used as such).
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available")
    # overfit_batches: mlplab's tensor loader is sequential then already (TensorDataModule);
    # Lightning only recognizes torch's SequentialSampler, so it warns that it shuffles.
    warnings.filterwarnings("ignore", message=r".*You requested to overfit but enabled")
    # We log per epoch only, so a short epoch below log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
