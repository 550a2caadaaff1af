"""Multirun sweeps: failed jobs recorded instead of fatal, and a summary of every sweep.

Importing this module loads no torch: Hydra instantiates :class:`SweepSummary` at startup.
"""

from __future__ import annotations

import csv
import json
import math
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


def record_failure(output_dir: str | Path, error: BaseException) -> Path:
    """Write ``failure.json`` (error type and one-line message) into a failed job's dir."""
    path = Path(output_dir) / FAILURE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    message = (str(error).strip().splitlines() or [""])[0]
    path.write_text(
        json.dumps({"status": "failed", "error": f"{type(error).__name__}: {message}"}, indent=2)
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
            row.update(status="failed", error=json.loads((job / FAILURE_FILE).read_text())["error"])
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
    _plot(rows, paths["png"])
    return paths


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.2f}%" if percent else str(value)


def _markdown(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "incomplete")}
    ok = [r for r in rows if r["status"] == "ok" and r.get("val_acc_best") is not None]
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
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


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Best val accuracy against each parameter that takes more than one value."""
    from mlplab.plotting import pyplot, save_figure

    plt = pyplot()

    swept = sorted(
        {k for r in rows for k in r["params"] if len({x["params"].get(k) for x in rows}) > 1}
    )
    swept = swept or ["job"]
    fig, axes = plt.subplots(1, len(swept), figsize=(4.2 * len(swept), 3.6), squeeze=False)
    for ax, key in zip(axes[0], swept, strict=True):
        labels = sorted({str(r["params"].get(key, r["job"])) for r in rows}, key=_numeric_first)
        for status, marker in (("ok", "o"), ("failed", "x")):
            points = [r for r in rows if r["status"] == status]
            xs = [labels.index(str(r["params"].get(key, r["job"]))) for r in points]
            ys = [r.get("val_acc_best") or 0.0 for r in points]
            if points:
                ax.scatter(xs, ys, marker=marker, s=40, label=status)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xlabel(key)
        ax.set_ylabel("best val accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Sweep: best val accuracy per swept parameter (failed jobs at 0)")
    save_figure(fig, path)


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
