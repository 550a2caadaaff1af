"""The LightningModule: one ``_step`` shared by train, val and test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from mlplab.errors import ConfigError, DivergenceError
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from .metrics import build_metrics

STAGES = {"fit": "train", "validate": "val", "test": "test"}  # Lightning stage -> metric prefix
UPDATE_EVERY = 16  # steps whose outputs are measured together (see _step)
UNMEASURED_KEY = "unmeasured_train_steps"  # in a mid-epoch checkpoint


class Classifier(L.LightningModule):
    """Train ``net`` on ``loss``; log the loss and ``metrics`` once per epoch for each stage.

    The parts arrive as configs (``_target_`` and arguments; see ``conf/module/``) and are
    built here, so they are saved with the hyperparameters and
    ``Classifier.load_from_checkpoint(path)`` rebuilds the trained model. Ready-made objects
    (an ``nn.Module`` net or loss, an optimizer factory) work too, as in plain Lightning.

    Args:
        net: the network; built with ``input_shape`` and ``num_outputs`` from the data.
        loss: criterion ``loss(outputs, targets) -> scalar``.
        optimizer: builds the optimizer from the trainable parameters (a Hydra ``_partial_``).
        scheduler: builds the learning-rate scheduler from the optimizer; empty for none.
        metrics: ``{name: torchmetrics metric config}``, logged as ``<stage>/<name>``.
        l1: strength of the L1 penalty on the weights (not biases), added to the training loss.
        scheduler_monitor: metric that ``ReduceLROnPlateau`` watches.
        input_shape: one example's shape, from the data.
        num_outputs: classes (or targets), from the data.
        task: the data's task, from the data; refused when it is not this module's.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | nn.Module,
        loss: Mapping[str, Any] | nn.Module,
        optimizer: Mapping[str, Any] | Any,
        scheduler: Mapping[str, Any] | Any | None = None,
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        l1: float = 0.0,
        scheduler_monitor: str = "val/loss",
        input_shape: Sequence[int] = (),
        num_outputs: int = 0,
        task: str | None = None,
    ) -> None:
        super().__init__()
        if task is not None and task != self.task:
            raise ConfigError(
                f"the data is a {task} task but module={MODULES[self.task]}: use "
                f"module={MODULES[task]} (with loss=mse and metrics=regression for "
                "regression; see experiment=tabular_regression)"
            )
        # Plain containers in the hyperparameters: checkpoints load with weights_only=True.
        net, loss, optimizer, scheduler, metrics = map(
            _plain, (net, loss, optimizer, scheduler, metrics)
        )
        self._check_parts(loss, metrics)
        input_shape = tuple(input_shape)
        built = [
            name for name, part in (("net", net), ("loss", loss)) if isinstance(part, nn.Module)
        ]
        self.save_hyperparameters(ignore=built)
        self.net = _build(net, input_shape=input_shape, num_outputs=num_outputs)
        self.loss = _build(loss)
        self.l1 = l1
        # Each stage's metrics are updated as its epoch goes and logged at its end. Their
        # states are saved in checkpoints, so that a run resumed mid-epoch reports the same
        # epoch as an uninterrupted one. Keyed by Lightning stage ("train" would clash with
        # nn.Module.train).
        self.metrics = nn.ModuleDict(
            {
                stage: build_metrics(metrics, num_outputs).clone(prefix=f"{prefix}/")
                for stage, prefix in STAGES.items()
            }
        )
        # A NaN loss must show as NaN, not be dropped from the mean: NaN is "imputed" with NaN.
        # (nan_strategy="disable" would do that too, but torchmetrics 1.9 then drops the
        # weights, i.e. the batch sizes: off by ~1e-3 on a lesson epoch.)
        self.mean_loss = nn.ModuleDict(
            {stage: MeanMetric(nan_strategy=math.nan) for stage in STAGES}
        )
        self.mean_l1 = MeanMetric(nan_strategy=math.nan)
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.persistent(True)
        self._pending: dict[str, list[tuple[Tensor, ...]]] = {stage: [] for stage in STAGES}
        self._train_losses: dict[int, Tensor] = {}  # this epoch's, by batch: names a NaN step

    task = "classification"  # the data task this module trains for

    def _check_parts(self, loss: Any, metrics: Any) -> None:
        """Refuse, in one line, parts that do not fit this module's task (before any is
        built, so that the message names the config, not a constructor deep inside)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        outputs = self(x)
        loss = self.compute_loss(outputs, y)
        measured = [outputs.detach(), y, loss.detach()]
        if stage == "fit" and self.l1 > 0:
            weights = (p for name, p in self.net.named_parameters() if name.endswith("weight"))
            penalty = self.l1 * sum(w.abs().sum() for w in weights)
            measured.append(penalty.detach())
            loss = loss + penalty
        # Measured every UPDATE_EVERY steps, not every step: a metric update costs ~0.1 ms
        # (2.6% of a lesson epoch on a 2-core CPU, and a host sync on a GPU), 16 at once ~10x
        # less. Memory stays bounded: at most 16 batches' outputs are kept.
        self._pending[stage].append(tuple(measured))
        if len(self._pending[stage]) == UPDATE_EVERY:
            self._update_metrics(stage)
        return loss

    def _update_metrics(self, stage: str) -> None:
        """Update ``stage``'s metrics with the steps not measured yet."""
        steps, self._pending[stage] = self._pending[stage], []
        if not steps:
            return
        outputs, targets, losses, *penalties = (
            _join(column) for column in zip(*steps, strict=True)
        )
        sizes = torch.tensor([len(s[1]) for s in steps], device=losses.device, dtype=losses.dtype)
        self.metrics[stage].update(outputs, targets)
        self.mean_loss[stage].update(losses, sizes)
        if penalties:
            self.mean_l1.update(penalties[0], sizes)

    def compute_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training objective on this module's outputs (``forward``) and the targets."""
        return self.loss(outputs, targets)

    def null_prediction(self, outputs: Tensor) -> Tensor:
        """What a model that learned nothing outputs: equal logits for every class."""
        return torch.zeros_like(outputs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._step(batch, "fit")
        self._train_losses[batch_idx] = loss.detach()
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "validate")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        """What a user of the model gets for a batch of inputs (or of inputs and targets)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.predictions(self(x))

    def predictions(self, outputs: Tensor) -> Tensor:
        """``forward``'s outputs as a user reads them: class probabilities."""
        return outputs.softmax(-1)

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        self._log_epoch("fit")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("validate")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch (synced across DDP processes by torchmetrics) and reset it."""
        self._update_metrics(stage)
        metrics, mean_loss = self.metrics[stage], self.mean_loss[stage]
        if not mean_loss.weight > 0:  # no batch in this epoch (e.g. limit_val_batches=0)
            return
        values = {f"{STAGES[stage]}/loss": mean_loss.compute(), **metrics.compute()}
        metrics.reset()
        mean_loss.reset()
        if stage == "fit" and self.mean_l1.weight > 0:
            values["train/l1_penalty"] = self.mean_l1.compute()
            self.mean_l1.reset()
        self.log_dict(values, prog_bar=stage != "test")

    def _check_finite(self) -> None:
        """Stop a diverged run at the end of its epoch, naming the step where it happened.

        Once per epoch, not per step: a per-step check would force a host sync on a GPU.
        """
        losses, self._train_losses = self._train_losses, {}
        if not losses:
            return
        batches = sorted(losses)
        values = torch.stack([losses[b] for b in batches]).float().cpu()
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0])
        before = f"; the step before it had loss {float(values[bad - 1]):.4g}" if bad else ""
        lr = self.optimizers().param_groups[0]["lr"]
        raise DivergenceError(
            f"training loss became {float(values[bad])} at step {batches[bad] + 1} of epoch "
            f"{self.current_epoch + 1}{before}: the run diverged; lower optimizer.lr "
            f"(now {lr:g}), clip gradients (trainer.gradient_clip_val=1.0) or check the data"
        )

    # A checkpoint taken mid-epoch (Ctrl-C, SIGTERM) holds the metrics' running states and
    # the training steps not measured yet (at most UPDATE_EVERY - 1 of them), so that a
    # resumed run measures the same groups of steps as an uninterrupted one: a float sum
    # grouped otherwise differs in its last bits.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[UNMEASURED_KEY] = [tuple(t.cpu() for t in step) for step in self._pending["fit"]]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        steps = checkpoint.get(UNMEASURED_KEY) or []
        self._pending["fit"] = [tuple(t.to(self.device) for t in step) for step in steps]
        for key, value in self.state_dict().items():  # written before metric states were
            if _is_metric(key):
                checkpoint["state_dict"].setdefault(key, value)

    def configure_optimizers(self):
        optimizer = _build(self.hparams.optimizer)(
            [p for p in self.parameters() if p.requires_grad]
        )
        make_scheduler = _build(self.hparams.scheduler)
        if make_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": make_scheduler(optimizer),
                "interval": "epoch",
                "monitor": self.hparams.scheduler_monitor,
            },
        }


class Regressor(Classifier):
    """The same module for real-valued targets: a table's ``data.task=regression``.

    The loss works on targets standardized with the training split's mean and standard
    deviation (kept as buffers, so checkpoints carry them); predictions (``forward``) and
    metrics are in the targets' own units. A network with one output per target.
    """

    task = "regression"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        outputs = max(int(self.hparams.num_outputs), 1)
        self.register_buffer("target_mean", torch.zeros(outputs))
        self.register_buffer("target_std", torch.ones(outputs))

    def setup(self, stage: str) -> None:
        if stage == "fit":  # a resumed run then loads the stored ones over these
            _, y = self.trainer.datamodule.splits["train"]
            y = y.reshape(len(y), -1).double()
            self.target_mean.copy_(y.mean(0))
            self.target_std.copy_(y.std(0, correction=0).clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x) * self.target_std + self.target_mean
        return out.squeeze(-1) if out.shape[-1] == 1 else out

    def compute_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.loss(self._standard(outputs), self._standard(targets))

    def predictions(self, outputs: Tensor) -> Tensor:
        """Values in the targets' units, as ``forward`` gives them."""
        return outputs

    def null_prediction(self, outputs: Tensor) -> Tensor:
        """What a model that learned nothing predicts: the training mean."""
        # One target: outputs (N,), the mean (1,); several: (N, k) and (k,). Both broadcast.
        return self.target_mean.expand_as(outputs)

    def _standard(self, values: Tensor) -> Tensor:
        return (values - self.target_mean) / self.target_std

    def _check_parts(self, loss: Any, metrics: Any) -> None:
        """A regression has no class labels: refuse a loss or metrics that need them."""
        target = loss.get("_target_", "") if isinstance(loss, Mapping) else type(loss).__name__
        needs_labels = [f"loss ({target.rsplit('.', 1)[-1]})"] if "CrossEntropy" in target else []
        needs_labels += [
            f"metrics.{name}"
            for name, spec in (metrics or {}).items()
            if spec and ".classification" in str(spec.get("_target_", ""))
        ]
        if needs_labels:
            raise ConfigError(
                f"a regression task has no class labels, but {' and '.join(needs_labels)} "
                "need them: use loss=mse (or mae, huber) and metrics=regression"
            )


MODULES = {"classification": "classifier", "regression": "regressor"}


def _is_metric(key: str) -> bool:
    return key.split(".", 1)[0] in ("metrics", "mean_loss", "mean_l1")


def _join(tensors: Sequence[Tensor]) -> Tensor:
    """Batches concatenated; per-step scalars stacked."""
    return torch.cat(tensors) if tensors[0].ndim else torch.stack(tensors)


def _plain(value: Any) -> Any:
    """A config node as plain dicts and lists (anything else unchanged)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _build(spec: Any, **kwargs: Any) -> Any:
    """Instantiate a config (a mapping with ``_target_``); ``None`` for an empty one; anything
    else is taken to be the object itself."""
    if isinstance(spec, Mapping):
        return instantiate(spec, **kwargs) if "_target_" in spec else None
    return spec
