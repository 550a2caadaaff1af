"""The LightningModule: one ``_step`` shared by train, val and test."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mlplab.errors import DivergenceError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], object]
STAGES = {"fit": "train", "validate": "val", "test": "test"}  # Lightning stage -> metric prefix


class Classifier(L.LightningModule):
    """Train ``net`` on ``loss``; log loss and accuracy per epoch for each stage.

    Metrics are accumulated on the device every step and logged once per epoch: a
    ``self.log`` call costs about a millisecond of Python, as much as the whole forward and
    backward pass of this MLP on a CPU, and a per-step host sync would stall a GPU.

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
        # One metric object per stage, so that their states never mix. Module dicts cannot
        # have a key "train" (it is a method), hence Lightning's stage names as keys.
        self.accuracy = nn.ModuleDict(
            {
                s: MulticlassAccuracy(net.num_classes, average="micro", validate_args=False)
                for s in STAGES
            }
        )
        # nan_strategy="disable": a NaN loss must reach the epoch mean (and the divergence
        # check), not be dropped with a warning as MeanMetric does by default.
        self.mean_loss = nn.ModuleDict({s: MeanMetric(nan_strategy="disable") for s in STAGES})
        self.l1_penalty = MeanMetric(nan_strategy="disable")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.mean_loss[stage].update(loss.detach(), len(y))
        self.accuracy[stage].update(logits.detach(), y)
        if stage == "fit" and self.l1 > 0:
            weights = (p for name, p in self.net.named_parameters() if name.endswith("weight"))
            penalty = self.l1 * sum(w.abs().sum() for w in weights)
            self.l1_penalty.update(penalty.detach())
            loss = loss + penalty
        return loss

    def _log_epoch(self, stage: str) -> dict[str, Tensor]:
        """Log the stage's epoch means (synced across processes by torchmetrics) and reset them."""
        prefix = STAGES[stage]
        values = {
            f"{prefix}/loss": self.mean_loss[stage].compute(),
            f"{prefix}/acc": self.accuracy[stage].compute(),
        }
        if stage == "fit" and self.l1 > 0:
            values["train/l1_penalty"] = self.l1_penalty.compute()
            self.l1_penalty.reset()
        self.log_dict(values, prog_bar=stage != "test")
        self.mean_loss[stage].reset()
        self.accuracy[stage].reset()
        return values

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "fit")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "validate")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        loss = self._log_epoch("fit")["train/loss"]
        # Checked once per epoch, not per step: a per-step check would force a host sync on GPU.
        if not torch.isfinite(loss):
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
