"""The LightningModule: one ``_step`` shared by train, val and test."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from mlplab.errors import DivergenceError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], object]
STAGES = {"fit": "train", "validate": "val", "test": "test"}  # Lightning stage -> metric prefix


class Classifier(L.LightningModule):
    """Train ``net`` on ``loss``; log loss and accuracy per epoch for each stage.

    Metrics are accumulated on the device every step and logged once per epoch: a
    ``self.log`` call costs about a millisecond of Python, as much as the whole forward and
    backward pass of this MLP on a CPU, and a per-step host sync would stall a GPU. The
    epoch's single host sync is in ``_log_epoch``.

    Args:
        net: the network, mapping inputs to class logits; has a ``num_classes`` attribute.
        loss: criterion ``loss(logits, labels) -> scalar``.
        optimizer: builds the optimizer from the trainable parameters (a Hydra ``_partial_``).
        scheduler: builds the learning-rate scheduler from the optimizer, or ``None``.
        l1: strength of the L1 penalty on the weights (not biases), added to the training loss.
        scheduler_monitor: metric that ``ReduceLROnPlateau`` watches.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        l1: float = 0.0,
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.net, self.loss = net, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.l1, self.scheduler_monitor = l1, scheduler_monitor
        # Per stage, running sums on the device ([loss, correct, l1 penalty] x examples) and a
        # Python count. In-place adds cost ~10 us a step; torchmetrics' update() ~80 us and
        # self.log() ~1 ms, as much as this MLP's whole forward and backward pass on a CPU.
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def __setattr__(self, name: str, value: object) -> None:
        # Lightning records which hook is running by setting `_current_fx_name` on the module
        # around every hook call, about 40 times a training step. `nn.Module.__setattr__`
        # costs ~4 us each (it checks the value against Parameter, Module and Buffer, whose
        # metaclasses make isinstance slow): ~0.17 ms a step, 5% of this MLP's step on a CPU.
        # The value is always a str or None, which nn.Module would store as a plain attribute.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        parts = [loss.detach() * len(y), (logits.detach().argmax(1) == y).sum()]
        if stage == "fit" and self.l1 > 0:
            weights = (p for name, p in self.net.named_parameters() if name.endswith("weight"))
            penalty = self.l1 * sum(w.abs().sum() for w in weights)
            parts.append(penalty.detach() * len(y))
            loss = loss + penalty
        step = torch.stack(parts)
        if stage in self._sums:
            self._sums[stage].add_(step)
        else:
            self._sums[stage] = step
        self._counts[stage] = self._counts.get(stage, 0) + len(y)
        return loss

    def _log_epoch(self, stage: str) -> dict[str, float]:
        """Log the stage's epoch means, summed over all processes, and reset the sums."""
        if stage not in self._sums:  # no batch in this epoch (e.g. limit_val_batches=0)
            return {}
        count = torch.tensor([self._counts.pop(stage)], dtype=torch.float32, device=self.device)
        sums = torch.cat([self._sums.pop(stage), count])
        # Sums, not means, cross the processes: exact even when ranks saw different counts.
        *sums, count = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        prefix = STAGES[stage]
        values = {f"{prefix}/loss": sums[0] / count, f"{prefix}/acc": sums[1] / count}
        if len(sums) > 2:
            values["train/l1_penalty"] = sums[2] / count
        self.log_dict(values, prog_bar=stage != "test")
        return values

    # A checkpoint taken mid-epoch carries the epoch's partial sums, so that a resumed run
    # reports the same epoch metrics as an uninterrupted one.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if "fit" in self._sums:
            checkpoint["mlplab_epoch_sums"] = {
                "fit": (self._sums["fit"].cpu(), self._counts["fit"])
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for stage, (sums, count) in checkpoint.get("mlplab_epoch_sums", {}).items():
            self._sums[stage], self._counts[stage] = sums.to(self.device), count

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "fit")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "validate")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        loss = self._log_epoch("fit").get("train/loss", 0.0)
        # Checked once per epoch, not per step: a per-step check would force a host sync on GPU.
        if not math.isfinite(loss):
            lr = self.optimizers().param_groups[0]["lr"]
            raise DivergenceError(
                f"training loss is {float(loss)} in epoch {self.current_epoch + 1}: the run "
                f"diverged; lower optimizer.lr (now {lr:g}) or check the data"
            )

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("validate")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": "epoch",
                "monitor": self.scheduler_monitor,
            },
        }
