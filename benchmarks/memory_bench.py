"""Memory at scale: what training holds beyond the data, and a mid-epoch checkpoint's size.

A generated table of 20 numeric columns and 10 classes (a Parquet file) is trained as
``python train.py data=table data.path=... data.target=label`` trains it, for one epoch,
batch 1024, in its own process per size. Measured in that process:

  data tensors     the train/val/test tensors the data module holds
  fit growth       peak RSS during fit and test minus the RSS when fitting starts (the data
                   loaded), sampled every 50 steps after glibc's malloc_trim: what the
                   module, metrics, optimizer and callbacks hold
  mid-epoch ckpt   the size of a checkpoint saved half-way through the epoch

Both should stay flat as the rows grow: nothing per example is kept across an epoch, and
nothing of an epoch's outputs goes into a checkpoint.

    python benchmarks/memory_bench.py [--rows 500000 1000000 2000000]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
BATCH = 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
    parser.add_argument("--flow", default=".train:train", help="the training flow (.x: project's)")
    parser.add_argument("--table", help=argparse.SUPPRESS)  # one child process per size
    return parser.parse_args()


def make_table(rows: int, path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
    frame["label"] = (x[:, :10].argmax(1) + (rng.random(rows) < 0.1)) % 10
    frame.to_parquet(path)


def rss_mb() -> float:
    """This process's resident memory now, from /proc (MB), after glibc returned the memory
    it holds free (``malloc_trim``): what is live, not what the allocator keeps for reuse,
    which varied by hundreds of MB between two runs of the same size."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemoryProbe(L.Callback):
    """RSS when fitting starts and its peak through fit and test (sampled every 50 steps and
    at every epoch's end); a checkpoint half-way through the first epoch."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        self.start = self.peak = 0.0
        self.peaks: dict[str, float] = {}  # by where it was sampled

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start = self.peak = rss_mb()

    def _sample(self, where: str = "train") -> None:
        now = rss_mb()
        self.peaks[where] = max(self.peaks.get(where, 0.0), now - self.start)
        self.peak = max(self.peak, now)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx % 50 == 0:
            self._sample()
        if batch_idx == trainer.num_training_batches // 2 and trainer.current_epoch == 0:
            trainer.save_checkpoint(self.checkpoint)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._sample("val")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sample("train end")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._sample("test")


PROBES: list[MemoryProbe] = []


def memory_probe(checkpoint: str) -> MemoryProbe:
    PROBES.append(MemoryProbe(checkpoint))
    return PROBES[-1]


def measure(table: str, flow: str) -> dict:
    """One size, in this process: train an epoch and report the probe's figures."""
    import importlib

    from hydra import compose, initialize_config_dir
    from mlplab.config import project_target
    from mlplab.resume import register_resolvers

    register_resolvers()
    out = Path(table).parent / "run"
    checkpoint = Path(table).parent / "mid_epoch.ckpt"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=table",
                f"data.path={table}",
                "data.target=label",
                f"data.batch_size={BATCH}",
                "data.eval_batch_size=4096",
                "trainer.max_epochs=1",
                "logger=none",
                "callbacks.progress_bar=null",
                "callbacks.lr_monitor=null",
                "callbacks.report=null",
                "trainer.enable_progress_bar=false",
                "+callbacks.memory._target_=__main__.memory_probe",
                f"+callbacks.memory.checkpoint={checkpoint}",
                f"output_dir={out}",
            ],
        )
    module_name, function = flow.split(":")
    package = project_target() if module_name.startswith(".") else None
    metrics = getattr(importlib.import_module(module_name, package), function)(cfg)
    probe = PROBES.pop()
    split_sizes = metrics["split_sizes"]
    rows = sum(split_sizes.values())
    data_mb = rows * (20 * 4 + 8) / 2**20  # float32 features, int64 labels
    return {
        "rows": rows,
        "data_mb": data_mb,
        "fit_growth_mb": probe.peak - probe.start,
        "checkpoint_mb": checkpoint.stat().st_size / 2**20,
        "test_acc": metrics["test/acc"],
        "peaks": probe.peaks,
    }


def main() -> None:
    args = parse_args()
    if args.table:
        print(json.dumps(measure(args.table, args.flow)))
        return
    results = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / "table.parquet"
            make_table(rows, table)
            done = subprocess.run(
                [sys.executable, __file__, "--table", str(table), "--flow", args.flow],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            if done.returncode != 0:
                sys.exit(f"{rows} rows failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"one epoch, batch {BATCH}, 20 numeric columns, 10 classes ({args.flow})")
    print("| rows | data tensors | fit growth (peak RSS - RSS at fit start) | mid-epoch ckpt |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['data_mb']:.0f} MB | {r['fit_growth_mb']:.0f} MB "
            f"| {r['checkpoint_mb']:.2f} MB |"
        )


if __name__ == "__main__":
    main()
