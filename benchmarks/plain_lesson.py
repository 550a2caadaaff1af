"""The lesson as a plain PyTorch script: the yardstick for a whole mlplab process.

Imports, reads the MNIST IDX files, splits 50,000 / 10,000, trains the lesson network
(784-256-128-10, ReLU, He init, dropout 0.3, SGD lr 0.01, weight decay 1e-4, batch 128) for
30 epochs with a validation pass after each, then tests on the official 10,000. No
framework, no logging, no checkpoints: what `make bench` compares `python train.py
experiment=lesson` with, process against process.

    python benchmarks/plain_lesson.py --data-dir path/to/mnist [--epochs 30]
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(len(images), -1)
    return (x - 0.1307) / 0.3081, torch.from_numpy(labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with MNIST IDX")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    parser.add_argument("--seed", type=int, default=42, help="seed (default: 42)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x, y = load(args.data_dir, "train")
    order = torch.randperm(len(y))
    train, val = order[:50000], order[50000:60000]
    (x_train, y_train), (x_val, y_val) = (x[train], y[train]), (x[val], y[val])
    x_test, y_test = load(args.data_dir, "t10k")

    layers: list[nn.Module] = []
    for fan_in, fan_out in ((784, 256), (256, 128)):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU(), nn.Dropout(0.3)]
    net = nn.Sequential(*layers, nn.Linear(128, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=1e-4)

    def accuracy(x_eval: torch.Tensor, y_eval: torch.Tensor) -> float:
        net.eval()
        with torch.no_grad():
            correct = sum(
                int((net(x_eval[i : i + 1000]).argmax(1) == y_eval[i : i + 1000]).sum())
                for i in range(0, len(y_eval), 1000)
            )
        return correct / len(y_eval)

    for _ in range(args.epochs):
        net.train()
        for batch in torch.randperm(len(y_train)).split(128):
            loss = F.cross_entropy(net(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_acc = accuracy(x_val, y_val)
    print(f"val accuracy {100 * val_acc:.2f}%, test accuracy {100 * accuracy(x_test, y_test):.2f}%")


if __name__ == "__main__":
    main()
