"""The LightningModule: one ``_step`` shared by train, val and test."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from mlplab.errors import DivergenceError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], object]


class Classifier(L.LightningModule):
    """Train ``net`` on ``loss``; log loss and accuracy per epoch for each stage.

    Args:
        net: the network, mapping inputs to class logits.
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
        num_classes = net.num_classes
        # One metric object per stage: their states must not mix. Accumulated on the device,
        # computed once per epoch, so logging costs no host sync per step.
        self.accuracy = nn.ModuleDict(
            {
                stage: MulticlassAccuracy(num_classes, average="micro")
                for stage in ("fit", "val", "test")
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        name = "train" if stage == "fit" else stage
        accuracy = self.accuracy[stage]
        accuracy(logits, y)
        self.log(f"{name}/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        self.log(f"{name}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "test")
        if stage == "fit" and self.l1 > 0:
            penalty = self.l1 * sum(
                p.abs().sum() for n, p in self.net.named_parameters() if n.endswith("weight")
            )
            self.log("train/l1_penalty", penalty, on_step=False, on_epoch=True, batch_size=len(y))
            loss = loss + penalty
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "fit")

    def on_train_epoch_end(self) -> None:
        # Checked once per epoch, not per step: a per-step check would force a host sync on GPU.
        loss = self.trainer.callback_metrics.get("train/loss")
        if loss is not None and not torch.isfinite(loss):
            lr = self.optimizers().param_groups[0]["lr"]
            raise DivergenceError(
                f"training loss is {float(loss)} in epoch {self.current_epoch + 1}: the run "
                f"diverged; lower optimizer.lr (now {lr:g}) or check the data"
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

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
