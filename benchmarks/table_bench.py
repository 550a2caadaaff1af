"""A table workload: seconds per epoch and peak memory of mlplab, bare Lightning and a plain loop.

A generated 100,000-row table (28 numeric columns, one categorical with 8 levels, a
regression target), trained as ``python train.py data=table data.path=... data.target=y``
trains it: the regressor (MSE on the standardized target), the MLP 256-128, SGD lr 0.01,
batch 64, on mlplab's preprocessed tensors. Each setup runs in its own process, so that its
peak memory (ru_maxrss) is its own:

  plain           a PyTorch loop over tensor slices (the same batches, same updates)
  lightning-bare  a minimal LightningModule on the same batches: Lightning's per-step floor
  mlplab          the project's train(cfg), what train.py runs (CSV logger, checkpoints, report)

    python benchmarks/table_bench.py [--rows 100000] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench  # its epoch clock: the same timing for both benches (benchmarks/ is on the path)

REPO = Path(__file__).resolve().parents[1]
SETUPS = ("plain", "lightning-bare", "mlplab")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=4, help="the first is warm-up")
    parser.add_argument("--setup", choices=SETUPS, help=argparse.SUPPRESS)  # one child process
    parser.add_argument("--table", help=argparse.SUPPRESS)
    return parser.parse_args()


def make_table(rows: int, path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 28))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(28)])
    frame["kind"] = rng.choice([f"k{i}" for i in range(8)], rows)
    effect = frame["kind"].str[1:].astype(int).to_numpy() * 0.3
    frame["y"] = x[:, :5] @ np.array([1.0, -2.0, 0.5, 3.0, 1.5]) + effect + rng.normal(0, 0.5, rows)
    frame.to_csv(path, index=False)


def config(table: str, epochs: int, output_dir: Path):
    from hydra import compose, initialize_config_dir
    from mlplab.resume import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "data=table",
                f"data.path={table}",
                "data.target=y",
                f"trainer.max_epochs={epochs}",
                "logger=csv",
                "callbacks.early_stopping.patience=1000",
                "callbacks.progress_bar=null",
                "trainer.enable_progress_bar=false",
                "+callbacks.epoch_clock._target_=bench.epoch_clock",
                f"output_dir={output_dir}",
            ],
        )


def run_setup(name: str, table: str, epochs: int) -> dict:
    import torch
    import torch.nn.functional as F
    from hydra.utils import get_class, get_method, instantiate
    from mlplab.config import project_target
    from mlplab.data.loader import PermutationSampler, TensorBatchLoader

    MLP = get_class(project_target("model.MLP"))

    tmp = Path(table).parent / name  # inside the parent's temporary dir
    cfg = config(table, epochs, tmp / "run")
    if name == "mlplab":
        get_method(project_target("train.train"))(cfg)
        return {"epochs": bench._CLOCKS.pop().epoch_times()}
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    (x, y), (xv, yv) = datamodule.splits["train"], datamodule.splits["val"]
    mean, std = y.mean(), y.std(correction=0)
    torch.manual_seed(cfg.seed)
    net = MLP(datamodule.input_shape, 1, hidden_sizes=[256, 128], dropout=0.3, init="he")
    sampler = PermutationSampler(len(y), shuffle=True, seed=cfg.seed)
    loader = TensorBatchLoader(x, y, 64, sampler)
    if name == "plain":
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=1e-4)
        times = []
        for epoch in range(epochs):
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            net.train()
            for xb, yb in loader:
                loss = F.mse_loss(net(xb).squeeze(-1), (yb - mean) / std)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                float(F.mse_loss(net(xv).squeeze(-1), (yv - mean) / std))
            times.append(time.perf_counter() - started)
        return {"epochs": times}
    import lightning as L

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.mse_loss(self.net(xb).squeeze(-1), (yb - mean) / std)

        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            self.log("val/loss", F.mse_loss(self.net(xb).squeeze(-1), (yb - mean) / std))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=1e-4)

    val = TensorBatchLoader(xv, yv, 1000, PermutationSampler(len(yv), shuffle=False))
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        callbacks=[bench.epoch_clock()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
    )
    trainer.fit(Bare(), loader, val)
    return {"epochs": bench._CLOCKS.pop().epoch_times()}


def main() -> None:
    args = parse_args()
    if args.setup:  # a child: one setup, its result as one JSON line
        result = run_setup(args.setup, args.table, args.epochs)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlplab-table-bench-") as tmp:
        table = Path(tmp) / "table.csv"
        make_table(args.rows, table)
        for name in SETUPS:
            proc = subprocess.run(
                [sys.executable, __file__, "--setup", name, "--table", str(table),
                 "--epochs", str(args.epochs)],
                cwd=Path(__file__).parent, capture_output=True, text=True, check=True,
            )  # fmt: skip
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            results[name] = json.loads(line.removeprefix("RESULT "))
    print(f"table workload: {args.rows:,} rows, 28 numeric + 1 categorical, batch 64")
    plain = statistics.median(results["plain"]["epochs"][1:])
    for name, result in results.items():
        per_epoch = statistics.median(result["epochs"][1:])
        print(
            f"  {name:<16}{per_epoch:>8.3f} s/epoch  ({per_epoch / plain:.2f}x plain)"
            f"  peak memory {result['peak_mb']:>6.0f} MB"
        )


if __name__ == "__main__":
    main()
