"""Multirun sweeps: failed jobs recorded instead of fatal, and a summary of every sweep.

Importing this module loads no torch: Hydra instantiates :class:`SweepSummary` at startup.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

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


# A multirun job's command line for its other DDP ranks (set by the job, read by the ranks).
DDP_JOB_ENV = "MLPLAB_DDP_JOB"


def share_job_with_ddp_ranks(output_dir: str | Path) -> None:
    """Tell this multirun job's DDP ranks (which Lightning starts as new processes with this
    process's command line, ``-m`` and all) which job they belong to: they run that one job,
    in its dir, instead of the whole sweep again (Lightning #11300, Hydra #2070)."""
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun():
        return
    overrides = list(HydraConfig.get().overrides.task)
    os.environ[DDP_JOB_ENV] = json.dumps({"overrides": overrides, "dir": str(output_dir)})


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
    path.write_text(
        json.dumps({"status": status, "error": f"{type(error).__name__}: {message}"}, indent=2)
    )
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
        if (job / "metrics.json").exists():
            metrics = json.loads((job / "metrics.json").read_text())
            row.update(
                status="ok",
                val_acc_best=metrics.get("val/acc_best"),
                test_acc=metrics.get("test/acc"),
                epochs=metrics.get("epochs_trained"),
                wall_s=metrics.get("wall_s"),
                # The training doctor's diagnoses, by name: which jobs trained badly, and how.
                doctor=" ".join(f["check"] for f in metrics.get("doctor", [])),
            )
        elif (job / FAILURE_FILE).exists():
            failure = json.loads((job / FAILURE_FILE).read_text())
            row.update(status=failure.get("status", "failed"), error=failure["error"])
        rows.append(row)
    return rows


def summarize(sweep_dir: str | Path) -> dict[str, Path]:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; return their paths."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    paths = {
        "csv": sweep_dir / "summary.csv",
        "md": sweep_dir / "summary.md",
        "png": sweep_dir / "summary.png",
    }
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["md"].write_text(_markdown(sweep_dir, rows))
    _plot(rows, paths["png"], _log_params(sweep_dir))
    return paths


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.2f}%" if percent else str(value)


def _markdown(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    counts = Counter(r["status"] for r in rows)
    shown = ["ok", "failed", "incomplete"] + ["interrupted"] * bool(counts["interrupted"])
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_acc_best") is not None]
    summary = ", ".join(f"{counts[status]} {status}" for status in shown)
    lines = [f"# Sweep {sweep_dir}", "", f"{len(rows)} jobs: {summary}."]
    if ok:
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


def _plot(rows: list[dict[str, Any]], path: Path, log_params: dict[str, bool]) -> None:
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
    swept = swept or ["job"]
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_acc_best") is not None]
    failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
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
        values = {r["job"]: str(r["params"].get(key, r["job"])) for r in rows}
        numbers = {job: _number(v) for job, v in values.items()}
        numeric = key != "job" and all(n is not None for n in numbers.values())
        if numeric:
            x_of = numbers
            positive = [n for n in numbers.values() if n > 0]
            spread = len(positive) == len(numbers) and max(positive) >= 100 * min(positive)
            if log_params.get(key, spread):
                ax.set_xscale("log")
        else:
            labels = sorted(set(values.values()), key=_numeric_first)
            x_of = {job: labels.index(v) for job, v in values.items()}
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
        if failed:
            ax.scatter(
                [x_of[r["job"]] for r in failed],
                [floor] * len(failed),
                marker="x",
                color="tab:red",
                s=40,
                label=f"failed ({len(failed)})",
            )
        if best is not None:
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
    (``tag(log, ...)``), read from the Hydra config a job of the sweep saved."""
    saved = next(iter(sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))), None)
    if saved is None:
        return {}
    params = OmegaConf.select(OmegaConf.load(saved), "hydra.sweeper.params") or {}
    return {str(k): "log" in str(v) for k, v in params.items()}


def _numeric_first(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends (also after failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        paths = summarize(config.hydra.sweep.dir)
        print(f"sweep summary: {paths['md']}")
