"""What pruning saves: one Optuna search run with each pruner, and without one.

The search of ``hparams_search=optuna`` (TPE, seed 42: optimizer, lr, dropout, weight decay,
widths) on the bundled digits, ``--trials`` trials of at most ``--epochs`` epochs each (early
stopping as configured), run as a user runs it::

    python train.py -m hparams_search=optuna hydra.sweeper.pruner=<each of --pruners> ...

Each sweep runs in its own process, one after the other, on all the cores; the sweep without
a pruner runs first and again last, and the savings are against the mean of the two, so that
a machine that speeds up or slows down during the bench does not pass for a pruner's saving
(their difference is printed: the noise of these figures). The table gives
the epochs trained (summed over the trials, from each job's metrics.json), the sweep's wall
time, the best val accuracy of the study, the pruned trials, and the seconds a trial costs
beyond its fit: from one trial's end to the next one's (both written by the same process:
each job's metrics.json), less the next one's fit (its ``fit_s``: its epochs, validations and
checkpoints). That is the sweeper's ask and tell, Hydra's composing of the job's config, the
data, testing and the report: what pruning cannot save.

    python benchmarks/pruning_bench.py [--trials 24] [--epochs 20] [--pruners none median ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# hydra.sweeper.pruner of each sweep: none, Optuna's median and hyperband pruners with their
# defaults, and the median pruner judging from the third trial on (its default: the sixth).
PRUNERS = ("none", "median", "{name:median,n_startup_trials:2}", "hyperband")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20, help="at most, per trial")
    parser.add_argument("--pruners", nargs="+", default=PRUNERS, help="none first")
    parser.add_argument("--args", nargs="*", default=[], help="more overrides for both sweeps")
    return parser.parse_args()


def run_sweep(pruner: str, args: argparse.Namespace, sweep_dir: Path) -> dict:
    command = [
        sys.executable, "train.py", "-m", "hparams_search=optuna",
        f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.pruner={pruner}",
        f"trainer.max_epochs={args.epochs}", "logger=csv", "trainer.enable_progress_bar=false",
        *args.args, f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the {pruner} sweep failed:\n{done.stderr[-3000:]}")
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    ended = sorted((p.stat().st_mtime, p) for p in sweep_dir.glob("*/metrics.json"))
    beyond = [
        later - earlier - json.loads(path.read_text())["fit_s"]
        for (earlier, _), (later, path) in itertools.pairwise(ended)
    ]
    # The trials' span: from the sweep's multirun.yaml (written as its first trial is asked)
    # to the last trial's metrics.json; the rest of the wall time is the process's start
    # (imports), opening the study, the summary and the best trial's pictures.
    span = ended[-1][0] - (sweep_dir / "multirun.yaml").stat().st_mtime
    return {
        "beyond_fit_s": sum(beyond) / max(len(beyond), 1),
        "pruner": pruner,
        "trials": len(jobs),
        "epochs": sum(m["epochs_trained"] for m in jobs),
        "fit_s": sum(m["fit_s"] for m in jobs),
        "span_s": span,
        "wall_s": wall,
        "best": max(m["val/acc_best"] for m in jobs),
        "pruned": sum(1 for m in jobs if m.get("pruned")),
    }


def main() -> None:
    args = parse_args()
    order = [*args.pruners, args.pruners[0]]  # none first and last
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_sweep(p, args, Path(tmp) / str(i)) for i, p in enumerate(order)]
    print(f"{args.trials} trials, at most {args.epochs} epochs each, TPE seed 42\n")
    print("| pruner | trials | pruned | epochs trained | fits s | trials s | wall s "
          "| s a trial beyond its fit | best val acc |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| `{r['pruner']}` | {r['trials']} | {r['pruned']} | {r['epochs']} | "
            f"{r['fit_s']:.0f} | {r['span_s']:.0f} | {r['wall_s']:.0f} | "
            f"{r['beyond_fit_s']:.2f} | {100 * r['best']:.2f}% |"
        )
    first, last = rows[0], rows[-1]
    none = {k: (first[k] + last[k]) / 2 for k in ("epochs", "wall_s", "span_s", "best")}
    drift = abs(first["wall_s"] - last["wall_s"]) / none["wall_s"]
    print(
        f"\nThe sweep without a pruner, first and last: {first['wall_s']:.0f} s and "
        f"{last['wall_s']:.0f} s of wall time ({drift:.0%} apart: the noise of what follows)."
    )
    print("What each pruner saves against their mean: of the epochs; of the wall time, and that")
    print("saving as a share of the epochs' saving; the same for the trials' span.")
    for r in rows[1:-1]:
        saved = 1 - r["epochs"] / none["epochs"]
        wall, span = 1 - r["wall_s"] / none["wall_s"], 1 - r["span_s"] / none["span_s"]
        print(
            f"{r['pruner']}: epochs {saved:.0%}, wall {wall:.0%} ({_share(wall, saved)}), "
            f"trials {span:.0%} ({_share(span, saved)}); best val accuracy "
            f"{100 * (r['best'] - none['best']):+.2f} points"
        )


def _share(saving: float, epochs_saving: float) -> str:
    return f"{saving / epochs_saving:.2f}x" if epochs_saving > 0 else "no epoch saved"


if __name__ == "__main__":
    main()
