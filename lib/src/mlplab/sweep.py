"""Multirun sweeps: failed jobs recorded instead of fatal, and a summary of every sweep.

Importing this module loads no torch: Hydra instantiates :class:`SweepSummary` at startup.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import statistics
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlplab.rundir import atomic_file, write_json, write_text
from mlplab.signals import request_stop, signal_name, stop_requested, stop_requests

FAILURE_FILE = "failure.json"
COLUMNS = [
    "job",
    "overrides",
    "status",
    "val_acc_best",
    "test_acc",
    "epochs",
    "wall_s",
    "doctor",
    "error",
]


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def in_submitit_job() -> bool:
    """Whether this process is a job that hydra-submitit-launcher started (on SLURM or not)."""
    return "SUBMITIT_FOLDER" in os.environ


def _launcher(config: Any) -> str:
    """The ``_target_`` of a multirun config's launcher."""
    return str(OmegaConf.select(config, "hydra.launcher._target_", default=""))


def _parallel_launcher(config: Any) -> bool:
    """Whether the launcher runs the jobs in worker processes of this one (joblib)."""
    return "joblib" in _launcher(config)


def jobs_in_this_process(config: Any) -> bool:
    """Whether the launcher runs the jobs one after the other in this process (Hydra's basic
    launcher), not in processes of its own (joblib's workers, submitit's jobs)."""
    return _launcher(config).endswith("basic_launcher.BasicLauncher")


def in_parallel_job() -> bool:
    """Whether this job runs in a worker process of a parallel launcher (joblib)."""
    from hydra.core.hydra_config import HydraConfig

    return in_multirun() and "joblib" in str(HydraConfig.get().launcher.get("_target_", ""))


# In the sweep dir once a parallel sweep got Ctrl-C or SIGTERM: no job of it starts after it.
# Named by the sweep's process, the parent of its joblib workers: the sweeps of one Optuna
# study may share a sweep dir, and a sweep run again in it starts its jobs.
STOP_FILE = "stopped-{pid}"
# The jobs this process's sweep launched, when its sweeper says (an Optuna study's sweep dir
# may hold other sweeps' jobs): the sweep's exit status counts these only.
THIS_SWEEPS_JOBS: list[str] = []
# Why this process's sweep starts no more jobs: an error that every job would repeat (the
# optimized metric is not one the runs record). Its sweeper stops asking; the jobs it had
# launched already end "not run".
ABANDONED: list[str] = []
# The jobs of this process's multirun that did not succeed (read by mlplab.cli.entry_point).
FAILED_JOBS: list[str] = []


def forget_earlier_sweeps() -> None:
    """A new command of this process knows nothing of an earlier command's sweep."""
    for facts in (THIS_SWEEPS_JOBS, ABANDONED, FAILED_JOBS):
        facts.clear()


def objectives(cfg: DictConfig) -> list[str]:
    """The metrics a sweep optimizes: ``optimized_metric``, a name or a list of names (a
    multi-objective study, one per direction)."""
    wanted = cfg.get("optimized_metric")
    if wanted is None:
        return []
    return [str(m) for m in wanted] if OmegaConf.is_list(wanted) else [str(wanted)]


def sweep_stopped() -> bool:
    """Whether this job's parallel sweep was stopped before the job began."""
    from hydra.core.hydra_config import HydraConfig

    stop_file = Path(HydraConfig.get().sweep.dir) / STOP_FILE.format(pid=os.getppid())
    return in_parallel_job() and stop_file.exists()


class _StopJobs:
    """A parallel sweep's own handler of Ctrl-C and SIGTERM: instead of joblib's abort (which
    kills the workers mid-write), each running job gets the signal (the terminal sends Ctrl-C
    to them too; a scheduler's SIGTERM reaches this process only) and stops at a batch
    boundary with a checkpoint, no new job starts, and the sweep ends with its summary."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not request_stop(signum):
            return  # a second Ctrl-C changes nothing
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        stop_file = self.sweep_dir / STOP_FILE.format(pid=os.getpid())
        stop_file.write_text(signal.Signals(signum).name + "\n")
        said = f"{signal_name(signum)}: stopping the sweep; running jobs save a checkpoint\n"
        os.write(2, said.encode())
        for pid in _child_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signum)


def _child_pids() -> list[int]:
    """This process's children (Linux /proc; elsewhere none: Ctrl-C reaches them anyway)."""
    me, children = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                children.append(int(stat.parent.name))
    return children


# A multirun job's command line for its other DDP ranks (set by the job, read by the ranks).
DDP_JOB_ENV = "MLPLAB_DDP_JOB"


@contextmanager
def ddp_job(output_dir: str | Path) -> Iterator[None]:
    """One DDP launch per multirun job.

    Lightning starts a job's other DDP ranks as new processes with this process's command
    line, ``-m`` and all: they are told which job they belong to, and run that one job in
    its dir instead of the whole sweep again (Lightning #11300, Hydra #2070). When the job
    ends, its process group is closed and the environment Lightning set up for it
    (``LOCAL_RANK``, ``MASTER_PORT``, ...) is put back, so that the next job of the sweep
    launches its own ranks instead of waiting for ranks that are gone.
    """
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun():
        yield
        return
    before = dict(os.environ)
    hydra_cfg = HydraConfig.get()
    # The job's trial of an Optuna study: every rank takes part in the pruner's decision.
    trial = [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.sweeper.")]
    overrides = list(hydra_cfg.overrides.task) + trial
    os.environ[DDP_JOB_ENV] = json.dumps({"overrides": overrides, "dir": str(output_dir)})
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


def ddp_rank_argv(argv: list[str]) -> list[str]:
    """``argv`` for this process: a DDP rank > 0 of a multirun job gets that job's command
    line (its overrides, its dir, no Hydra files of its own); any other process its own."""
    job = os.environ.get(DDP_JOB_ENV)
    multirun = any(arg in ("-m", "--multirun") for arg in argv[1:])
    if not job or not multirun or os.environ.get("LOCAL_RANK", "0") == "0":
        return argv
    spec = json.loads(job)
    run_dir = '"' + spec["dir"].replace("\\", "\\\\").replace('"', '\\"') + '"'
    return [argv[0], *spec["overrides"], f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def record_failure(output_dir: str | Path, error: BaseException, status: str = "failed") -> Path:
    """Write ``failure.json`` (status, error type and one-line message) into a job's dir."""
    path = Path(output_dir) / FAILURE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    message = (str(error).strip().splitlines() or [""])[0]
    write_json(path, {"status": status, "error": f"{type(error).__name__}: {message}"})
    return path


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    )


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job of a finished, failed or interrupted sweep."""
    rows = []
    for job in _job_dirs(Path(sweep_dir)):
        overrides = [str(o) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")]
        row: dict[str, Any] = {
            "job": job.name,
            "overrides": " ".join(overrides),
            "status": "incomplete",
        }
        row["params"] = dict(o.split("=", 1) for o in overrides if "=" in o)
        if (job / FAILURE_FILE).exists():  # also when it trained but its result is unusable
            failure = json.loads((job / FAILURE_FILE).read_text())
            row.update(status=failure.get("status", "failed"), error=failure["error"])
        elif (job / "metrics.json").exists():
            metrics = json.loads((job / "metrics.json").read_text())
            row.update(
                # pruned: an Optuna study's pruner stopped it, a normal outcome, not a failure
                status="pruned" if metrics.get("pruned") else "ok",
                val_acc_best=metrics.get("val/acc_best"),
                test_acc=metrics.get("test/acc"),
                epochs=metrics.get("epochs_trained"),
                wall_s=metrics.get("wall_s"),
                # The training doctor's diagnoses, by name: which jobs trained badly, and how.
                doctor=" ".join(f["check"] for f in metrics.get("doctor", [])),
            )
        rows.append(row)
    return rows


# Jobs that differ only in these are repeats of one configuration: aggregated, not ranked.
REPLICATE_KEYS = ("seed", "data.fold")
AGGREGATED = ("test_acc", "val_acc_best")


def configuration(row: dict[str, Any]) -> str:
    """A job's overrides without the seed and fold: the configuration it repeats."""
    return (
        " ".join(f"{k}={v}" for k, v in row["params"].items() if k not in REPLICATE_KEYS)
        or "(defaults)"
    )


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration (the finished jobs that differ only by seed or fold): ``n`` and the
    mean, standard deviation, min, max and 95% interval (Student's t) of each metric of
    :data:`AGGREGATED`; sorted by mean best val accuracy, best first."""
    from scipy import stats

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(configuration(row), []).append(row)
    configs = []
    for name, members in groups.items():
        entry: dict[str, Any] = {"configuration": name, "n": len(members)}
        entry["jobs"] = " ".join(r["job"] for r in members)
        for metric in AGGREGATED:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            if not values:
                continue
            n, mean = len(values), statistics.fmean(values)
            std = statistics.stdev(values) if n > 1 else 0.0
            half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else math.nan
            entry |= {
                f"{metric}_mean": mean,
                f"{metric}_std": std,
                f"{metric}_min": min(values),
                f"{metric}_max": max(values),
                f"{metric}_ci95": half,
            }
        configs.append(entry)
    return sorted(configs, key=lambda c: -c.get("val_acc_best_mean", -math.inf))


def summarize(sweep_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir`` (from its jobs'
    ``rows``, collected if not given); return their paths."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir) if rows is None else rows
    paths = {
        "csv": sweep_dir / "summary.csv",
        "md": sweep_dir / "summary.md",
        "png": sweep_dir / "summary.png",
    }
    with atomic_file(paths["csv"], newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    configs = aggregate(rows)
    if any(c["n"] > 1 for c in configs):  # repeats over seeds or folds: one row a configuration
        paths["configs"] = sweep_dir / "summary_configs.csv"
        with atomic_file(paths["configs"], newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(configs[0]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(configs)
    else:
        configs = []
    write_text(paths["md"], _markdown(sweep_dir, rows, configs))
    _plot(rows, paths["png"], _log_params(sweep_dir), configs)
    return paths


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.2f}%" if percent else str(value)


def _markdown(sweep_dir: Path, rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> str:
    counts = Counter(r["status"] for r in rows)
    shown = ["ok", "failed", "incomplete"] + [
        status for status in ("pruned", "interrupted", "not run") if counts[status]
    ]
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_acc_best") is not None]
    summary = ", ".join(f"{counts[status]} {status}" for status in shown)
    lines = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs: {summary}."]
    scored = [c for c in configs if "val_acc_best_mean" in c]
    if scored:  # repeats: the best configuration by its mean, not the luckiest seed
        best = scored[0]
        lines.append(
            f"Best configuration by mean best val accuracy over its {best['n']} runs: "
            f"`{best['configuration']}`, val {_spread(best, 'val_acc_best')}, "
            f"test {_spread(best, 'test_acc')}."
        )
        lines += [
            "",
            "| configuration | n | best val acc (mean ± std) | test acc (mean ± std) "
            "| test 95% interval | test min | test max | jobs |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c in configs:
            half = c.get("test_acc_ci95", math.nan)
            interval = (
                f"{_fmt(c['test_acc_mean'] - half, True)} - {_fmt(c['test_acc_mean'] + half, True)}"
                if "test_acc_mean" in c and not math.isnan(half)
                else ""
            )
            lines.append(
                f"| `{c['configuration']}` | {c['n']} | {_spread(c, 'val_acc_best')} | "
                f"{_spread(c, 'test_acc')} | {interval} | {_fmt(c.get('test_acc_min'), True)} "
                f"| {_fmt(c.get('test_acc_max'), True)} | {c['jobs']} |"
            )
    elif ok:
        best = max(ok, key=lambda r: r["val_acc_best"])
        val, test = _fmt(best["val_acc_best"], True), _fmt(best["test_acc"], True)
        lines.append(
            f"Best val accuracy {val} (test {test}): job {best['job']}, `{best['overrides']}`."
        )
    lines += [
        "",
        "![metric per swept parameter](summary.png)",
        "",
        "| job | overrides | status | best val acc | test acc | epochs | wall s | doctor | error |",
        "|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        cells = [
            r["job"],
            f"`{r['overrides']}`",
            r["status"],
            _fmt(r.get("val_acc_best"), True),
            _fmt(r.get("test_acc"), True),
            _fmt(r.get("epochs")),
            _fmt(r.get("wall_s")),
            _fmt(r.get("doctor")),
            _fmt(r.get("error")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(config: dict[str, Any], metric: str) -> str:
    if f"{metric}_mean" not in config:
        return ""
    return f"{_fmt(config[f'{metric}_mean'], True)} ± {100 * config[f'{metric}_std']:.2f}"


def _plot(
    rows: list[dict[str, Any]],
    path: Path,
    log_params: dict[str, bool],
    configs: list[dict[str, Any]] | None = None,
) -> None:
    """Best val accuracy against each parameter that takes more than one value.

    Numeric parameters on a numeric axis (logarithmic where the search space says so, or,
    for a parameter it does not name, where the values span two decades or more), others as
    categories; the best job is starred, failed jobs are red crosses under the finished ones.
    Three panels to a row.
    """
    from mlplab.plotting import pyplot, save_figure

    plt = pyplot()
    swept = sorted(
        {k for r in rows for k in r["params"] if len({x["params"].get(k) for x in rows}) > 1}
    )
    if configs:  # repeats: seeds and folds are no parameter, their spread is drawn instead
        swept = [k for k in swept if k not in REPLICATE_KEYS]
    swept = swept or ["configuration" if configs else "job"]
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_acc_best") is not None]
    failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
    pruned = [r for r in rows if r["status"] == "pruned" and r.get("val_acc_best") is not None]
    best = max(ok, key=lambda r: r["val_acc_best"]) if ok else None
    accs = [r["val_acc_best"] for r in ok] or [0.0]
    floor = min(accs) - 0.08 * (max(accs) - min(accs) or 1.0)  # where failed jobs are drawn
    cols = min(3, len(swept))
    nrows = -(-len(swept) // cols)
    fig, axes = plt.subplots(
        nrows,
        cols,
        figsize=(max(5.0, 4.2 * cols), 3.6 * nrows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[len(swept) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, swept, strict=False):
        values = {
            r["job"]: configuration(r)
            if key == "configuration"
            else str(r["params"].get(key, r["job"]))
            for r in rows
        }
        parsed = {job: _number(v) for job, v in values.items()}
        numbers = {job: n for job, n in parsed.items() if n is not None}
        x_of: dict[str, float]
        if key not in ("job", "configuration") and len(numbers) == len(parsed):
            x_of = numbers
            positive = [n for n in numbers.values() if n > 0]
            spread = len(positive) == len(numbers) and max(positive) >= 100 * min(positive)
            if log_params.get(key, spread):
                ax.set_xscale("log")
        else:
            labels = sorted(set(values.values()), key=_numeric_first)
            x_of = {job: float(labels.index(v)) for job, v in values.items()}
            short = [v if len(v) <= 14 else v[:13] + "…" for v in labels]
            ax.set_xticks(range(len(labels)), short, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        if ok:
            ax.scatter(
                [x_of[r["job"]] for r in ok],
                [r["val_acc_best"] for r in ok],
                s=30,
                alpha=0.8,
                label=f"finished ({len(ok)})",
            )
        if pruned:
            ax.scatter(
                [x_of[r["job"]] for r in pruned],
                [r["val_acc_best"] for r in pruned],
                marker="v",
                color="tab:gray",
                s=24,
                alpha=0.7,
                label=f"pruned ({len(pruned)})",
            )
        if failed:
            ax.scatter(
                [x_of[r["job"]] for r in failed],
                [floor] * len(failed),
                marker="x",
                color="tab:red",
                s=40,
                label=f"failed ({len(failed)})",
            )
        first = configs[0] if configs else None
        for c in configs or []:
            if "val_acc_best_mean" not in c:
                continue
            member = next(r for r in ok if configuration(r) == c["configuration"])
            ax.errorbar(
                [x_of[member["job"]]],
                [c["val_acc_best_mean"]],
                yerr=[
                    [c["val_acc_best_mean"] - c["val_acc_best_min"]],
                    [c["val_acc_best_max"] - c["val_acc_best_mean"]],
                ],
                fmt="D",
                color="black",
                capsize=4,
                markersize=5,
                zorder=4,
                label="mean, min-max over repeats" if c is first else None,
            )
        if best is not None and not configs:
            ax.scatter(
                [x_of[best["job"]]],
                [best["val_acc_best"]],
                marker="*",
                s=220,
                color="gold",
                edgecolor="black",
                zorder=3,
                label=f"best: job {best['job']} ({100 * best['val_acc_best']:.2f}%)",
            )
        ax.set_xlabel(key + (" (log)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("best val accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    title = f"Sweep of {len(rows)} jobs: best val accuracy per swept parameter"
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(14 * fig.get_figwidth()))), fontsize=10)
    save_figure(fig, path)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _log_params(sweep_dir: Path) -> dict[str, bool]:
    """For each parameter of the sweeper's search space, whether it is sampled on a log scale
    (``tag(log, ...)``), read from the configs a job of the sweep saved: the job's own
    ``search_space`` and Hydra's ``hydra.sweeper.params``."""
    saved = next(iter(sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))), None)
    if saved is None:
        return {}
    job = saved.with_name("config.yaml")
    own = OmegaConf.select(OmegaConf.load(job), "search_space") if job.is_file() else None
    params = {
        **(cast(dict, OmegaConf.to_container(own)) if OmegaConf.is_dict(own) else {}),
        **(OmegaConf.select(OmegaConf.load(saved), "hydra.sweeper.params") or {}),
    }
    return {str(k): "log" in str(v) for k, v in params.items()}


def _numeric_first(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends (also after failures).

    A parallel (joblib) sweep stopped by Ctrl-C or SIGTERM ends the same way, and then says
    how to resume each interrupted job (see :class:`_StopJobs`).
    """

    def __init__(self) -> None:
        # Entered only for jobs in this process: submitit pickles the callbacks with the jobs
        # it submits, and an entered context does not pickle.
        self._stops: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _parallel_launcher(config):
            _StopJobs(Path(config.hydra.sweep.dir)).install()
        elif jobs_in_this_process(config):  # the running job stops (its training at a batch
            # boundary), and no job starts after it (mlplab.cli.run_task)
            self._stops = stop_requests("the sweep")
            self._stops.__enter__()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stops, self._stops = self._stops or contextlib.nullcontext(), None
        try:  # a signal while the summary is written: noted, and after it
            self._summarize(config)
        finally:
            stops.__exit__(None, None, None)

    def _summarize(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        paths = summarize(sweep_dir, rows)
        print(f"sweep summary: {paths['md']}")
        stopped = stop_requested()
        if stopped is not None:
            from mlplab.resume import newest_checkpoint, resume_command

            for row in rows:
                checkpoint = newest_checkpoint(sweep_dir / row["job"])
                if row["status"] == "interrupted" and checkpoint is not None:
                    print(f"job {row['job']}: resume with: {resume_command(checkpoint)}")
        ours = [r for r in rows if r["job"] in THIS_SWEEPS_JOBS] if THIS_SWEEPS_JOBS else rows
        failed = [r for r in ours if r["status"] not in ("ok", "pruned")]
        if failed:  # train.py then exits 1 (mlplab.cli.entry_point): the sweep did not succeed
            FAILED_JOBS[:] = [r["job"] for r in failed]
            where = ", ".join(
                f"{sweep_dir / r['job'] / FAILURE_FILE}"
                for r in failed
                if r["status"] != "incomplete"
            )
            by = f"the sweep stopped by {signal_name(stopped)}: " if stopped is not None else ""
            print(
                f"error: {by}{len(failed)} of {len(ours)} jobs did not succeed "
                f"({', '.join(sorted({r['status'] for r in failed}))})"
                + (f"; their errors: {where}" if where else ""),
                file=sys.stderr,
            )
        elif stopped is not None:  # train.py exits 130 or 143 all the same (mlplab.cli)
            print(
                f"error: {signal_name(stopped)} arrived as the sweep was ending; each of its "
                f"jobs is complete: {paths['md']}",
                file=sys.stderr,
            )


def summarize_sweep() -> Path:
    """Write the summary of this job's sweep now (a sweep that stops early); its summary.md."""
    from hydra.core.hydra_config import HydraConfig

    return summarize(HydraConfig.get().sweep.dir)["md"]
