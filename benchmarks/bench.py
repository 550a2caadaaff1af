"""Per-epoch cost of mlplab next to a plain PyTorch loop and a conventional Lightning setup.

All four setups train the lesson's network (784-256-128-10, ReLU, He init, dropout 0.3, SGD lr 0.01,
weight decay 1e-4, batch 128) on the same 50,000/10,000 MNIST split, from the same seed, in
one process, one after the other:

  (a) plain    a hand-written PyTorch loop over tensor slices
  (b) mlplab   the project's train(cfg) on `experiment=lesson`, the code path of train.py,
               with its default loggers (W&B offline + CSV) and callbacks
  (l) lightning-bare  Lightning's own floor: a minimal LightningModule (training_step and
               validation_step only) on mlplab's tensor batches, no callbacks, loggers or bar;
               what is left between it and (a) is Lightning's per-step machinery
  (c) classic  a common Lightning setup: TensorDataset + DataLoader(shuffle=True), self.log on
               every step (on_step and on_epoch, shown in the progress bar), progress bar
               refreshed every step, CSV logger

Seconds per epoch: per round, the median of the epochs after the first; then the median over
rounds. Ratios are taken within each round, and their median is printed beside each round's.
An epoch is all of it: training, validation, and for the Lightning setups the epoch-end hooks,
logging and checkpointing too (timed from one epoch's start to the next). Then whole processes
are timed: `python train.py --help`, and with --full-run: the fixed cost of a run (wall
minus its fit and test loops minus importing the stack), the 30-epoch lesson run against
benchmarks/plain_lesson.py (3 alternating pairs), and an 8-job sweep's throughput.

    python benchmarks/bench.py --data-dir path/to/mnist [--epochs 4] [--rounds 4] [--full-run]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per setup (default: 4)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default: 4)")
    parser.add_argument("--seed", type=int, default=42, help="seed for all setups (default: 42)")
    parser.add_argument(
        "--train-size",
        type=int,
        default=50_000,
        help="training examples, the lesson's 50,000 by default (fewer: a quick check)",
    )
    parser.add_argument(
        "--full-run",
        action="store_true",
        help="also time a full 30-epoch lesson run (default: off)",
    )
    parser.add_argument(
        "--accelerator", default="cpu", help="cpu or gpu, for all setups (default: cpu)"
    )
    args = parser.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        parser.error("--epochs must be at least 2 (the first is warm-up) and --rounds at least 1")
    return args


_CLOCKS: list = []  # each epoch_clock() callback, so the bench can read it after fit


def epoch_clock():
    """A callback that timestamps each epoch's start and the end of training.

    mlplab's own ``epoch_s`` stops at the end of validation, before the module's epoch-end
    logging and before checkpoints are written; the bench charges those to the epoch too.
    Built by a function so that Hydra can instantiate it (``__main__.epoch_clock``) while
    Lightning is imported only when a setup runs.
    """
    import lightning as L

    class EpochClock(L.Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            self.marks.append(time.perf_counter())

        def epoch_times(self) -> list[float]:
            return [end - start for start, end in zip(self.marks, self.marks[1:], strict=False)]

    _CLOCKS.append(EpochClock())
    return _CLOCKS[-1]


def lesson_config(args: argparse.Namespace, output_dir: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=lesson",
                f"data.data_dir={args.data_dir}",
                f"trainer.max_epochs={args.epochs}",
                f"trainer.accelerator={args.accelerator}",
                f"seed={args.seed}",
                f"data.train_size={args.train_size}",
                f"output_dir={output_dir}",
                *overrides,
            ],
        )


def lesson_net():
    """The lesson's network, as every setup builds it: 784-256-128-10, ReLU, He, dropout 0.3."""
    from hydra.utils import get_class
    from mlplab.config import project_target

    MLP = get_class(project_target("model.MLP"))  # this project's MLP (src/<package>/model.py)
    return MLP((1, 28, 28), 10, hidden_sizes=[256, 128], activation="relu", dropout=0.3, init="he")


def run_plain(args: argparse.Namespace, datamodule) -> tuple[list[float], float]:
    """(a) A plain PyTorch loop: the same model, data order and updates as mlplab."""
    import torch
    import torch.nn.functional as F
    from mlplab.data.loader import PermutationSampler, TensorBatchLoader

    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    torch.manual_seed(args.seed)
    net = lesson_net().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=1e-4)
    (x_train, y_train), (x_val, y_val) = (
        tuple(t.to(device) for t in datamodule.splits[s]) for s in ("train", "val")
    )
    sampler = PermutationSampler(len(y_train), shuffle=True, seed=args.seed)
    loader = TensorBatchLoader(x_train, y_train, 128, sampler)
    times, val_acc = [], 0.0
    for epoch in range(args.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad():
            for start in range(0, len(y_val), 1000):
                logits = net(x_val[start : start + 1000])
                correct += (logits.argmax(1) == y_val[start : start + 1000]).sum()
        val_acc = float(correct) / len(y_val)  # the one host sync per epoch
        times.append(time.perf_counter() - started)
    return times, val_acc


def run_mlplab(args: argparse.Namespace, output_dir: Path) -> tuple[list[float], float]:
    """(b) mlplab's own train(cfg), exactly what train.py runs."""
    from hydra.utils import get_method
    from mlplab.config import project_target

    train = get_method(project_target("train.train"))

    cfg = lesson_config(
        args,
        output_dir,
        "callbacks.early_stopping.patience=1000",
        "+callbacks.epoch_clock._target_=__main__.epoch_clock",
    )
    metrics = train(cfg)
    return _CLOCKS.pop().epoch_times(), metrics["history"][-1]["val/acc"]


def run_bare(args: argparse.Namespace, datamodule, output_dir: Path) -> tuple[list[float], float]:
    """(l) The least Lightning can do per step: the floor under any Lightning template."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from mlplab.data.loader import PermutationSampler, TensorBatchLoader

    class BareModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = lesson_net()
            self.correct = 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.correct += (self.net(x).argmax(1) == y).sum()

        def on_validation_epoch_end(self):
            self.log("val/acc", float(self.correct) / len(y_val))  # one host sync per epoch
            self.correct = 0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=1e-4)

    L.seed_everything(args.seed, verbose=False)
    model = BareModule()
    (x_train, y_train), (x_val, y_val) = (datamodule.splits[s] for s in ("train", "val"))
    sampler = PermutationSampler(len(y_train), shuffle=True, seed=args.seed)
    train_loader = TensorBatchLoader(x_train, y_train, 128, sampler)
    val_loader = TensorBatchLoader(
        x_val, y_val, 1000, PermutationSampler(len(y_val), shuffle=False)
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        logger=False,
        callbacks=[epoch_clock()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=output_dir,
    )
    trainer.fit(model, train_loader, val_loader)
    return _CLOCKS.pop().epoch_times(), float(trainer.callback_metrics["val/acc"])


def run_classic(
    args: argparse.Namespace, datamodule, output_dir: Path
) -> tuple[list[float], float]:
    """(c) The Lightning setup most tutorials show."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class ClassicModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = lesson_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            acc = (logits.argmax(1) == y).float().mean()
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train_acc", acc, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True)
            self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=1e-4)

    L.seed_everything(args.seed, verbose=False)
    model = ClassicModule()
    train_loader = DataLoader(
        TensorDataset(*datamodule.splits["train"]), batch_size=128, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(*datamodule.splits["val"]), batch_size=1000)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        logger=CSVLogger(output_dir),
        callbacks=[TQDMProgressBar(refresh_rate=1), epoch_clock()],
        default_root_dir=output_dir,
        enable_model_summary=False,
    )
    trainer.fit(model, train_loader, val_loader)
    return _CLOCKS.pop().epoch_times(), float(trainer.callback_metrics["val/acc"])


def time_process(*argv: str, repeat: int = 1) -> float:
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=REPO, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    import torch
    from hydra.utils import get_class
    from mlplab.config import project_target

    IdxDataModule = get_class(project_target("data.IdxDataModule"))

    datamodule = IdxDataModule(
        name="mnist",
        data_dir=args.data_dir,
        download=False,
        train_size=args.train_size,
        val_size=10000,
    )
    datamodule.setup("fit")
    # Rounds interleave the setups, every other round in reverse order (a b l c, c l b a, ...),
    # so that drifting load on a shared machine hits all of them alike. The ratios are taken
    # within each round and their median is reported: a slow minute then cancels out instead
    # of landing on whichever setup happened to run in it.
    setups = {
        "plain": lambda tmp: run_plain(args, datamodule),
        "mlplab": lambda tmp: run_mlplab(args, tmp / "mlplab"),
        "lightning-bare": lambda tmp: run_bare(args, datamodule, tmp / "bare"),
        "classic": lambda tmp: run_classic(args, datamodule, tmp / "classic"),
    }
    times: dict[str, list[list[float]]] = {name: [] for name in setups}
    val_acc: dict[str, float] = {}
    for round_index in range(args.rounds):
        order = list(setups) if round_index % 2 == 0 else list(reversed(setups))
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                epoch_times, val_acc[name] = setups[name](Path(tmp))
            times[name].append(epoch_times)

    # Per round, the median epoch after the first (the first pays for warm-up).
    per_round = {
        name: [statistics.median(rnd[1:]) for rnd in rounds] for name, rounds in times.items()
    }
    per_epoch = {name: statistics.median(values) for name, values in per_round.items()}
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {args.accelerator}, "
        f"{args.epochs} epochs x {args.rounds} rounds, seed {args.seed}"
    )
    print(f"{'setup':<16}{'s/epoch':>10}{'final val acc':>16}   epochs of each round (s)")
    for name, rounds in times.items():
        epochs = " | ".join(" ".join(f"{t:.2f}" for t in rnd) for rnd in rounds)
        print(f"{name:<16}{per_epoch[name]:>10.3f}{100 * val_acc[name]:>15.2f}%   {epochs}")

    def ratio(numerator: str, denominator: str, note: str) -> None:
        each = [n / d for n, d in zip(per_round[numerator], per_round[denominator], strict=True)]
        print(
            f"{numerator} / {denominator} = {statistics.median(each):.2f}x  "
            f"(rounds: {' '.join(f'{r:.2f}' for r in each)}){note}"
        )

    print("ratios: median of the per-round ratios")
    ratio("mlplab", "plain", "  target <= 1.10")
    ratio("lightning-bare", "plain", "  Lightning's own floor")
    ratio("mlplab", "lightning-bare", "  what mlplab adds to it")
    ratio("classic", "mlplab", "  target >= 1.40")

    print(
        f"\nprocess: python train.py --help  {time_process('train.py', '--help', repeat=3):.2f} s"
    )
    if args.full_run:
        with tempfile.TemporaryDirectory() as tmp:
            whole_processes(args, Path(tmp))


# What importing the stack costs, whoever imports it: the floor under any run's start.
IMPORT_LINE = "import lightning.pytorch, torchmetrics, wandb, hydra, matplotlib.pyplot"
GRID = ["optimizer=sgd,momentum,adam,adamw", "regularization.dropout=0.0,0.3"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def fit_seconds(run_dir: Path) -> float:
    """A run's own fit and test loops (metrics.json ``wall_s``)."""
    return json.loads((run_dir / "metrics.json").read_text())["wall_s"]


def whole_processes(args: argparse.Namespace, tmp: Path) -> None:
    """Whole processes: fixed cost of a run, the lesson run against a plain script, sweeps."""
    imports = time_process("-c", IMPORT_LINE, repeat=3)
    print(f"\nprocess: {IMPORT_LINE}  {imports:.2f} s")

    # Fixed cost: everything a run does besides importing the stack and its own fit/test loops.
    startup = {}
    for k, (label, overrides, target) in enumerate(
        (("default run", [], 1.0), ("debug=smoke", ["debug=smoke"], 0.5))
    ):
        walls, fits = [], []
        for i in range(3):
            run_dir = tmp / f"fixed-{k}-{i}"
            walls.append(time_process("train.py", *overrides, f"hydra.run.dir={run_dir}"))
            fits.append(fit_seconds(run_dir))
        wall, fit = statistics.median(walls), statistics.median(fits)
        startup[label] = wall - fit
        print(
            f"fixed cost, {label}: wall {wall:.2f} - fit {fit:.2f} - imports {imports:.2f} "
            f"= {wall - fit - imports:.2f} s  target <= {target}"
        )

    # The 30-epoch lesson, process against process, alternating pairs.
    ratios = []
    for i in range(3):
        commands = {
            "plain": ["benchmarks/plain_lesson.py", "--data-dir", args.data_dir],
            "mlplab": [
                "train.py",
                "experiment=lesson",
                f"data.data_dir={args.data_dir}",
                f"hydra.run.dir={tmp}/lesson-{i}",
            ],
        }
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        pair = {name: time_process(*commands[name]) for name in order}
        ratios.append(pair["mlplab"] / pair["plain"])
        print(f"process: lesson, plain {pair['plain']:.1f} s, mlplab {pair['mlplab']:.1f} s")
    print(
        f"process: mlplab / plain lesson = {statistics.median(ratios):.2f}x  "
        f"(pairs: {' '.join(f'{r:.2f}' for r in ratios)})  target <= 1.30"
    )

    # Sweep throughput: the 8-job grid on the bundled digits, in one process and two at once.
    for k, (label, overrides) in enumerate(
        (
            ("one process", []),
            ("one process, no per-job pictures (callbacks.report=null)", ["callbacks.report=null"]),
            ("joblib n_jobs=2", JOBLIB),
        )
    ):
        sweep_dir = tmp / f"sweep-{k}"
        wall = time_process("train.py", "-m", *GRID, *overrides, f"hydra.sweep.dir={sweep_dir}")
        jobs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
        fits = sum(fit_seconds(job) for job in jobs)
        extra = (wall - startup["default run"] - fits) / len(jobs)
        line = (
            f"sweep, {len(jobs)} jobs, {label}: {wall:.1f} s, {60 * len(jobs) / wall:.1f} jobs/min"
        )
        if overrides != JOBLIB:  # jobs one after the other: what each costs beyond its fit
            line += (
                f"; jobs' fit {fits:.1f} s; beyond one startup and the fits {extra:.2f} s a job"
                "  target <= 0.5"
            )
        print(line)


if __name__ == "__main__":
    main()
