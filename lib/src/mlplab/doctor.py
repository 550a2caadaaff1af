"""The training doctor: reads a run the way the lesson teaches, and says what went wrong.

``TrainingDoctor`` (a callback, on by default) gathers a few cheap signals while training:
the loss of the first batch before any update, every step's loss (kept on the device, copied
once per epoch) and, every few steps, the gradient norm of each layer. At the end of fitting,
``diagnose`` turns them and the epoch history into findings, each with the numbers that
triggered it, the likely causes and what to try. The findings go into the run record
(:mod:`mlplab.record`): printed at the end, in report.md, metrics.json and the W&B summary.
(A NaN or infinite loss is the module's to stop: see ``Classifier._check_finite``.)
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mlplab.callbacks import EpochHistory
from mlplab.data.contract import TaskData
from mlplab.record import RunRecord, why_fit_ended


@dataclass
class Finding:
    """One diagnosis: what was seen (with its numbers), why it usually happens, what to try."""

    check: str
    message: str
    causes: str
    fixes: str
    epoch: int | None = None
    values: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return format_finding(self.to_dict())


def format_finding(finding: dict[str, Any]) -> str:
    """Three lines: the check, epoch and message; the likely causes; what to try."""
    where = f" (epoch {finding['epoch']})" if finding.get("epoch") is not None else ""
    return (
        f"[{finding['check']}]{where} {finding['message']}\n"
        f"    likely causes: {finding['causes']}\n    try: {finding['fixes']}"
    )


@dataclass
class Thresholds:
    """When the doctor speaks up. Every field is a ``callbacks.doctor.<name>`` config value."""

    initial_loss_tolerance: float = 0.5  # initial loss off by more than this fraction ...
    # ... of the untrained loss, or of this, if larger: a freshly initialized net's random
    # logits add about 0.5-1 to ln(C) whatever C is, which is most of ln 2 or ln 3.
    initial_loss_scale: float = 2.0
    plateau_epochs: int = 3  # window of epochs in which the loss must fall ...
    plateau_min_decrease: float = 0.02  # ... by at least this fraction,
    plateau_max_progress: float = 0.5  # unless it is already below this x the uniform loss
    spike_factor: float = 2.0  # a step's loss at this x the median of the steps before ...
    spike_window: int = 10  # ... (this many of them)
    spike_min_jump: float = 0.25  # ... and higher by this fraction of the uniform loss
    spike_mads: float = 10.0  # ... and by this many median absolute deviations of those steps
    chance_margin: float = 0.02  # val accuracy within this of chance or baseline
    overfit_rise: float = 0.1  # val loss this fraction above its minimum ...
    overfit_epochs: int = 3  # ... for at least this many epochs after the minimum
    overfit_gap: float = 0.02  # and a train-val accuracy gap above this
    vanishing_ratio: float = 1e-3  # gradient norm of the first layer / the last layer
    exploding_ratio: float = 1e3
    exploding_norm: float = 1e3  # any layer's gradient norm above this
    min_steps: int = 30  # fewer optimizer steps: too few to judge accuracy, plateau, overfitting


SHORT_CHECK_RUN = (
    "a short check run (trainer.fast_dev_run, limit_train_batches, max_steps, debug=smoke)"
)


def diagnose(
    history: list[dict[str, float]],
    thresholds: Thresholds,
    initial_loss: float | None = None,
    uniform_loss: float | None = None,
    steps_per_epoch: list[int] | None = None,
    spike: Finding | None = None,
    grad_norms: list[list[float]] | None = None,
    chance_acc: float | None = None,
    baseline_acc: float | None = None,
    early_stopping_monitor: str | None = None,
    one_batch_cause: str = "the batch is as large as the training set",
    short_cause: str | None = SHORT_CHECK_RUN,
    inputs: str = "images",
) -> list[Finding]:
    """Findings for a finished (or stopped) run, from its epoch history and step signals.

    Args:
        history: per-epoch rows with ``epoch``, ``train/loss``, ``train/acc``, ``val/loss``,
            ``val/acc`` (as ``EpochHistory`` records them).
        thresholds: when to speak up.
        initial_loss: loss of the first training batch before any update.
        uniform_loss: the same loss for a model predicting every class equally (ln(C) for
            cross-entropy).
        steps_per_epoch: the optimizer steps of each epoch.
        spike: the first loss spike (:class:`SpikeWatch` watches the steps as they come).
        grad_norms: per epoch, the mean gradient norm of each layer, first to last.
        chance_acc: accuracy of guessing uniformly (1 / number of classes).
        baseline_acc: val accuracy of always predicting the majority class.
        early_stopping_monitor: the metric early stopping watches, if any.
        one_batch_cause: why an epoch may be a single step (said if every one was).
        short_cause: why the run may have few steps (said if it had); ``None``: it was cut
            short on purpose (a study's pruner), so that is no finding.
        inputs: what an example is, in the advice: ``images``, or ``rows`` of a table.
    """
    t = thresholds
    steps = sum(steps_per_epoch or [])
    # One step an epoch explains a short run better than "too few steps" does.
    one_step = _one_step_per_epoch(steps_per_epoch or [], one_batch_cause)
    few = (
        _too_few_steps(steps, t, short_cause)
        if steps_per_epoch is not None and not one_step and short_cause is not None
        else []
    )
    pruned = short_cause is None and steps < t.min_steps
    # With one update per epoch a slow loss is the batch size's doing, not the rate's; with a
    # handful of steps in all, nothing about learning can be judged yet.
    judged = not (one_step or few or pruned)
    findings = [
        *_initial_loss(initial_loss, uniform_loss, t),
        *few,
        *one_step,
        *(_plateau(history, uniform_loss, t, inputs) if judged else []),
        *([spike] if spike is not None else []),
        *(_chance(history, chance_acc, baseline_acc, t, inputs) if judged else []),
        *(_no_better_than_mean(history, t) if judged else []),
        *(_overfitting(history, early_stopping_monitor, t) if not (few or pruned) else []),
        *_gradients(grad_norms or [], t),
    ]
    # In the order they happened: an early spike often explains a later plateau.
    return sorted(findings, key=lambda f: f.epoch if f.epoch is not None else math.inf)


def _initial_loss(initial: float | None, uniform: float | None, t: Thresholds) -> list[Finding]:
    if initial is None or not uniform:
        return []
    off = initial / uniform - 1
    if abs(initial - uniform) <= t.initial_loss_tolerance * max(uniform, t.initial_loss_scale):
        return []
    return [
        Finding(
            "initial_loss",
            f"the first batch's loss is {initial:.4g}, {abs(off):.0%} "
            f"{'above' if off > 0 else 'below'} {uniform:.4g}, the loss of a model that learned "
            f"nothing (ln(number of classes) for cross-entropy; for regression on "
            f"standardized targets, the target variance: 1 for MSE)",
            "weights initialized too large (or too small); inputs not scaled to [0, 1] or "
            "standardized; labels that do not match the outputs; a loss applied to "
            "probabilities instead of logits",
            "check the input range and labels of one batch; use init=he for ReLU, "
            "xavier for sigmoid/tanh; use the loss on raw logits",
            epoch=1,
            values={"initial_loss": initial, "uniform_loss": uniform},
        )
    ]


def _plateau(
    history: list[dict[str, float]], uniform: float | None, t: Thresholds, inputs: str
) -> list[Finding]:
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    if not losses:
        return []
    reference = uniform or losses[0]
    for end in range(t.plateau_epochs, len(losses)):
        before, window = (
            losses[end - t.plateau_epochs],
            losses[end - t.plateau_epochs + 1 : end + 1],
        )
        decrease = (before - min(window)) / before if before > 0 else 0.0
        if decrease < t.plateau_min_decrease and min(window) > t.plateau_max_progress * reference:
            first = end - t.plateau_epochs + 1
            return [
                Finding(
                    "plateau",
                    f"the training loss {_change(decrease)} in epochs {first + 1}-{end + 1} "
                    f"({before:.4f} -> {min(window):.4f}) while still at "
                    f"{min(window) / reference:.0%} of the loss of a model that learned "
                    f"nothing ({reference:.4f})",
                    "learning rate too low (or so high that the loss bounces around); "
                    "vanishing gradients (deep sigmoid/tanh nets); labels that carry no signal; "
                    "a bug that detaches the loss from the weights",
                    "raise optimizer.lr by 10x (or use optimizer=adam); use ReLU with init=he; "
                    f"check that the targets match the {inputs}",
                    epoch=end + 1,
                    values={"loss_before": before, "loss_after": min(window)},
                )
            ]
    return []


def _too_few_steps(steps: int, t: Thresholds, cause: str) -> list[Finding]:
    if steps >= t.min_steps:
        return []
    return [
        Finding(
            "too_few_steps",
            f"only {steps} optimizer step{'s' * (steps != 1)} in all: too few to judge "
            f"accuracy, plateaus or overfitting (the doctor needs {t.min_steps}); those "
            "checks were skipped",
            cause,
            "for a diagnosis, train longer (e.g. trainer.max_epochs=5 without limits)",
            epoch=None,
            values={"steps": float(steps)},
        )
    ]


def _one_step_per_epoch(steps_per_epoch: list[int], cause: str) -> list[Finding]:
    if len(steps_per_epoch) < 2 or any(steps != 1 for steps in steps_per_epoch):
        return []
    return [
        Finding(
            "one_step_per_epoch",
            f"every epoch was a single optimizer step ({len(steps_per_epoch)} steps in "
            f"{len(steps_per_epoch)} epochs): {cause}",
            "data.batch_size not smaller than the training set (or limit_train_batches=1)",
            "use mini-batches, e.g. data.batch_size=128; with full-batch training, raise "
            "trainer.max_epochs by the number of batches it replaces",
            epoch=1,
            values={"steps": float(len(steps_per_epoch))},
        )
    ]


def _examples(batch: Any) -> int:
    """The examples in a batch ``(inputs, targets)``; 0 where that cannot be told."""
    if isinstance(batch, list | tuple) and batch and hasattr(batch[-1], "__len__"):
        return len(batch[-1])
    return 0


def _change(decrease: float) -> str:
    return f"fell only {decrease:.1%}" if decrease >= 0 else f"rose {-decrease:.1%}"


class SpikeWatch:
    """Finds the first loss spike, epoch by epoch, keeping only the last steps' losses.

    A step whose loss is spike_factor x the median of the steps just before it, and higher
    by a sizeable part of the untrained loss: one noisy batch late in training (0.2 -> 0.45)
    is no spike; 0.9 -> 27 is. What it keeps does not grow with the run: the window of
    recent losses, the largest batch so far and the finding.
    """

    def __init__(self, uniform: float | None, thresholds: Thresholds) -> None:
        self.floor = thresholds.spike_min_jump * (uniform or 1.0)
        self.t = thresholds
        self.recent: deque[float] = deque(maxlen=thresholds.spike_window)
        self.full = 0  # the largest batch so far: a full one
        self.epoch = 0
        self.found: Finding | None = None

    def watch(self, losses: list[float], sizes: list[int] | None = None) -> None:
        """The next epoch's step losses (and the examples of each step)."""
        self.epoch += 1
        sizes = sizes or []
        self.full = max([self.full, *sizes])
        t = self.t
        for step, value in enumerate(losses, start=1):
            if self.recent and self.found is None:
                median = statistics.median(self.recent)
                # Noisy small batches (a regression table) swing; a spike stands out of that.
                spread = statistics.median(abs(r - median) for r in self.recent)
                jump = value - median
                # A smaller batch (an epoch's last, partial one) swings more: its mean's noise
                # grows as 1/sqrt(examples), and so does what counts as a jump.
                size = sizes[step - 1] if step <= len(sizes) and sizes[step - 1] else self.full
                noise = math.sqrt(self.full / size) if self.full and size else 1.0
                allowed = noise * max(self.floor, t.spike_mads * spread)
                if value > t.spike_factor * median and jump > allowed:
                    self.found = Finding(
                        "loss_spike",
                        f"the training loss jumped to {value:.4g} at step {step} of the "
                        f"epoch, {value / median:.1f}x the median {median:.4g} of the "
                        f"{len(self.recent)} steps before it",
                        "learning rate too high: a step overshoots into a region of much "
                        "higher loss (and may kill ReLUs or diverge); no warm-up; a bad batch",
                        "lower optimizer.lr (2-10x); add a schedule (scheduler=cosine); "
                        "clip gradients (trainer.gradient_clip_val=1.0)",
                        epoch=self.epoch,
                        values={"spike_loss": value, "recent_median": median, "step": step},
                    )
            self.recent.append(value)

    def state_dict(self) -> dict[str, Any]:
        found = self.found.to_dict() if self.found is not None else None
        return {"recent": list(self.recent), "full": self.full, "epoch": self.epoch, "found": found}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.extend(state.get("recent", []))
        self.full, self.epoch = int(state.get("full", 0)), int(state.get("epoch", 0))
        self.found = Finding(**state["found"]) if state.get("found") else None


def _spikes(
    step_losses: list[list[float]],
    uniform: float | None,
    t: Thresholds,
    step_batches: list[list[int]] | None = None,
) -> list[Finding]:
    """The first loss spike in a run's step losses (per epoch), as :class:`SpikeWatch` finds
    it when the epochs come one at a time."""
    spikes = SpikeWatch(uniform, t)
    for epoch, losses in enumerate(step_losses):
        spikes.watch(losses, (step_batches or [])[epoch] if epoch < len(step_batches or []) else [])
    return [spikes.found] if spikes.found is not None else []


def _chance(
    history: list[dict[str, float]],
    chance: float | None,
    baseline: float | None,
    t: Thresholds,
    inputs: str,
) -> list[Finding]:
    accs = [r["val/acc"] for r in history if "val/acc" in r]
    known = [a for a in (chance, baseline) if a is not None]
    if not accs or not known:
        return []
    floor = max(known)
    best = max(accs)
    if best > floor + t.chance_margin:
        return []
    return [
        Finding(
            "chance_level",
            f"the best validation accuracy, {best:.2%}, does not beat chance "
            f"({(chance or 0):.2%}) or the majority-class baseline ({(baseline or 0):.2%}) "
            f"by more than {t.chance_margin:.0%}",
            f"labels shuffled or misaligned with the {inputs}; a learning rate far too low or "
            "too high; a dead network (all ReLUs off); training on the wrong data",
            f"look at a few {inputs} with their labels; try optimizer.lr=0.01 with "
            "optimizer=sgd and the lesson's config (experiment=lesson)",
            epoch=len(history) or None,
            values={"best_val_acc": best, "chance_acc": chance or 0.0, "baseline": baseline or 0.0},
        )
    ]


def _no_better_than_mean(history: list[dict[str, float]], t: Thresholds) -> list[Finding]:
    """Regression's chance level: a validation R² no better than predicting the mean (0)."""
    scores = [r["val/r2"] for r in history if "val/r2" in r]
    if not scores or max(scores) > t.chance_margin:
        return []
    return [
        Finding(
            "no_better_than_mean",
            f"the best validation R² is {max(scores):.3f}: no better than predicting the "
            f"training mean (R² = 0) by more than {t.chance_margin}",
            "features that carry no signal about the target; a learning rate far too low or "
            "too high; unscaled or misaligned targets",
            "check that features and target line up row by row; try optimizer=adam with "
            "optimizer.lr=0.001; compare with a linear model "
            "(python benchmarks/tabular_yardsticks.py)",
            epoch=len(history) or None,
            values={"best_val_r2": max(scores)},
        )
    ]


def _overfitting(
    history: list[dict[str, float]], monitor: str | None, t: Thresholds
) -> list[Finding]:
    rows = [r for r in history if "val/loss" in r and "train/acc" in r and "train/loss" in r]
    if len(rows) <= t.overfit_epochs:
        return []
    best = min(rows, key=lambda r: r["val/loss"])
    last = rows[-1]
    after = int(last["epoch"] - best["epoch"])
    rise = last["val/loss"] / best["val/loss"] - 1
    gap_best = best["train/acc"] - best["val/acc"]
    gap_last = last["train/acc"] - last["val/acc"]
    if after < t.overfit_epochs or rise < t.overfit_rise or gap_last < t.overfit_gap:
        return []
    keeps = (
        f"early stopping on {monitor} keeps epoch {int(best['epoch'])}"
        if monitor == "val/loss"
        else f"early stopping on val/loss would keep epoch {int(best['epoch'])}"
    )
    return [
        Finding(
            "overfitting",
            f"the validation loss rose {rise:.0%} from its minimum {best['val/loss']:.4f} at "
            f"epoch {int(best['epoch'])} to {last['val/loss']:.4f} at epoch {int(last['epoch'])}"
            f" while the training loss fell from {best['train/loss']:.4f} to "
            f"{last['train/loss']:.4f}; the train-val accuracy gap is {100 * gap_last:.1f} "
            f"points (train {last['train/acc']:.2%}, val {last['val/acc']:.2%}; "
            f"{100 * gap_best:.1f} at epoch {int(best['epoch'])}); {keeps}",
            "a model with more capacity than the training data supports; too little "
            "regularization; training too long",
            "keep early stopping on (callbacks.early_stopping.patience=5); add dropout "
            "(regularization.dropout=0.3) or weight decay; more data or augment=shift",
            epoch=int(best["epoch"]),
            values={
                "val_loss_min": best["val/loss"],
                "val_loss_last": last["val/loss"],
                "gap_at_min": gap_best,
                "gap_last": gap_last,
            },
        )
    ]


def _gradients(grad_norms: list[list[float]], t: Thresholds) -> list[Finding]:
    findings: list[Finding] = []
    for epoch, norms in enumerate(grad_norms, start=1):
        if len(norms) < 2 or not norms[-1]:
            continue
        ratio = norms[0] / norms[-1]
        layers = ", ".join(f"{n:.2e}" for n in norms)
        if ratio < t.vanishing_ratio:
            findings.append(
                Finding(
                    "vanishing_gradients",
                    f"the first layer's gradient norm is {ratio:.1e} of the last layer's "
                    f"(per layer, first to last: {layers}): the early layers barely learn",
                    "saturating activations (sigmoid, tanh) in a deep net; too small an "
                    "initialization",
                    "use activation=relu with init=he; fewer layers; xavier init for sigmoid",
                    epoch=epoch,
                    values={"ratio_first_to_last": ratio},
                )
            )
            break
        if ratio > t.exploding_ratio or max(norms) > t.exploding_norm:
            findings.append(
                Finding(
                    "exploding_gradients",
                    f"gradient norms per layer, first to last: {layers} (first/last {ratio:.1e})",
                    "learning rate too high; too large an initialization; unscaled inputs",
                    "lower optimizer.lr; clip gradients (trainer.gradient_clip_val=1.0); "
                    "scale the inputs; init=he",
                    epoch=epoch,
                    values={"ratio_first_to_last": ratio, "max_norm": max(norms)},
                )
            )
            break
    return findings


class TrainingDoctor(L.Callback):
    """Watch a run and diagnose it at the end of fitting.

    Cheap by design: step losses stay on the device until the epoch ends (one host copy per
    epoch), and gradient norms are taken every ``grad_every_n_steps`` steps. Findings are in
    ``self.findings`` after ``fit`` and in the run record (printed, report.md, metrics.json
    ``doctor``, W&B summary ``doctor/*``).

    Args:
        grad_every_n_steps: how often the per-layer gradient norms are measured.
        **thresholds: any field of :class:`Thresholds` (their defaults are there), e.g.
            ``+callbacks.doctor.spike_factor=3``.
    """

    def __init__(self, grad_every_n_steps: int = 20, **thresholds: Any) -> None:
        self.grad_every_n_steps = grad_every_n_steps
        self.thresholds = Thresholds(**thresholds)
        self.findings: list[Finding] = []
        self.initial_loss: float | None = None
        self.uniform_loss: float | None = None
        self.steps_per_epoch: list[int] = []
        self.spikes = SpikeWatch(None, self.thresholds)  # its floor set with the uniform loss
        self._sizes: list[int] = []  # this epoch's steps' examples
        self._batch_size = 0  # examples in the batches accumulated into the next step
        self.grad_norms: list[list[float]] = []  # per epoch: mean norm per layer
        self._losses: list[Tensor] = []  # this epoch's, one per optimizer step
        self._batch_losses: list[Tensor] = []  # batches accumulated into the next step
        self._grads: list[Tensor] = []
        self._step = 0  # the optimizer step count after the last batch
        self._measured_this_epoch = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.initial_loss is not None or trainer.current_epoch > 0 or batch_idx > 0:
            return
        # A module of ours: compute_loss(outputs, targets), null_prediction(outputs).
        loss_fn = getattr(pl_module, "compute_loss", None)
        if not callable(loss_fn):
            return
        x, y = batch
        was_training = pl_module.training
        pl_module.eval()  # no dropout: no random numbers drawn, so the run is unchanged
        with torch.no_grad():
            outputs = pl_module(x)
            self.initial_loss = float(loss_fn(outputs, y))
            # The loss of a model that learned nothing: equal logits for every class (ln C
            # for cross-entropy), the training mean for regression (the target variance).
            self.uniform_loss = float(loss_fn(pl_module.null_prediction(outputs), y))
        pl_module.train(was_training)
        self.spikes = SpikeWatch(self.uniform_loss, self.thresholds)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            # Lightning hands over the loss divided by accumulate_grad_batches (what it
            # back-propagates): the batch's own loss is that times the factor.
            self._batch_losses.append(loss.detach() * trainer.accumulate_grad_batches)
            self._batch_size += _examples(batch)
        if trainer.global_step != self._step:  # this batch ended an optimizer step
            self._step = trainer.global_step
            self._end_step()

    def _end_step(self) -> None:
        if self._batch_losses:  # the step's loss: the mean of the batches it accumulated
            self._losses.append(torch.stack(self._batch_losses).mean())
            self._batch_losses = []
            self._sizes.append(self._batch_size)
            self._batch_size = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = trainer.global_step
        self._measured_this_epoch = False

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Every n-th optimizer step, and the first of every epoch: each epoch is measured
        # however few steps it has (accumulate_grad_batches, limit_train_batches).
        if trainer.global_step % self.grad_every_n_steps and self._measured_this_epoch:
            return
        self._measured_this_epoch = True
        grads = [
            p.grad for name, p in pl_module.named_parameters() if p.ndim > 1 and p.grad is not None
        ]
        if grads:  # one fused kernel for all layers (as clip_grad_norm_ does)
            self._grads.append(torch.stack(torch._foreach_norm(grads)).detach())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's one host copy of the doctor's signals; grad_norms[e] is epoch e + 1's.
        self._end_step()
        losses = torch.stack(self._losses).float().cpu() if self._losses else torch.empty(0)
        self._losses = []
        self.spikes.watch(losses.tolist(), self._sizes)
        self.steps_per_epoch.append(len(losses))
        self._sizes = []
        norms = torch.stack(self._grads).mean(0).cpu().tolist() if self._grads else []
        self.grad_norms.append(norms)
        self._grads = []
        if norms:
            pl_module.log_dict({f"grad_norm/layer{i + 1}": v for i, v in enumerate(norms)})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = next((c.epochs for c in trainer.callbacks if isinstance(c, EpochHistory)), [])
        data = trainer.datamodule if isinstance(trainer.datamodule, TaskData) else None
        classes = data is not None and data.task == "classification"
        stopper = trainer.early_stopping_callback
        self.findings = diagnose(
            history,
            self.thresholds,
            initial_loss=self.initial_loss,
            uniform_loss=self.uniform_loss,
            steps_per_epoch=self.steps_per_epoch,
            spike=self.spikes.found,
            grad_norms=self.grad_norms,
            # Chance and the majority class are yardsticks of classification only.
            chance_acc=1 / data.num_outputs if data is not None and classes else None,
            baseline_acc=data.baseline().get("val") if data is not None and classes else None,
            early_stopping_monitor=stopper.monitor if stopper is not None else None,
            one_batch_cause=_one_batch_cause(trainer),
            short_cause=_short_cause(trainer),
            inputs="images" if data is None or len(data.input_shape) == 3 else "rows",
        )
        record = RunRecord.of(trainer)
        if record is not None:
            found = [f.to_dict() for f in self.findings]
            record.add(
                "doctor",
                found,
                report=report_section(found),
                console=[
                    f"training doctor: {len(found) or 'no'} finding{'s' * (len(found) != 1)}",
                    *(textwrap.indent(str(f), "  ") for f in self.findings),
                ],
                wandb={
                    "doctor/findings": len(found),
                    **{f"doctor/{f.check}": f.message for f in self.findings},
                },
            )

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint taken mid-epoch (Ctrl-C, SIGTERM) also carries the epoch's signals so
        # far, so that a resumed run sees the whole epoch, numbered as an uninterrupted one:
        # one tensor each (a step's loss is 4 bytes), and nothing of the epochs before.
        return {
            "initial_loss": self.initial_loss,
            "uniform_loss": self.uniform_loss,
            "steps_per_epoch": self.steps_per_epoch,
            "spikes": self.spikes.state_dict(),
            "grad_norms": self.grad_norms,
            "epoch_sizes": torch.tensor(self._sizes, dtype=torch.int64),
            "epoch_losses": _stacked(self._losses),
            "epoch_grads": _stacked(self._grads),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_loss = state_dict.get("initial_loss")
        self.uniform_loss = state_dict.get("uniform_loss")
        self.steps_per_epoch = [int(n) for n in state_dict.get("steps_per_epoch", [])]
        self.spikes = SpikeWatch(self.uniform_loss, self.thresholds)
        self.spikes.load_state_dict(state_dict.get("spikes", {}))
        self._sizes = [int(n) for n in state_dict.get("epoch_sizes", [])]
        self.grad_norms = list(state_dict.get("grad_norms", []))
        self._losses = list(state_dict.get("epoch_losses", []))
        self._grads = list(state_dict.get("epoch_grads", []))


def _stacked(tensors: list[Tensor]) -> Tensor:
    """Scalars or same-shape tensors as one CPU tensor (one entry in a checkpoint)."""
    return torch.stack(tensors).cpu() if tensors else torch.empty(0)


def _short_cause(trainer: L.Trainer) -> str | None:
    """Why this run may have few optimizer steps, from how its fit ended and Lightning's
    settings; ``None`` for a trial its study's pruner stopped (short on purpose)."""
    reason = why_fit_ended(trainer)
    if reason == "pruned":
        return None
    causes = {
        "interrupted": "the run was interrupted before it trained much",
        "fast_dev_run": "trainer.fast_dev_run, a check run of a few batches",
        "max_steps": f"trainer.max_steps={trainer.max_steps}",
        "max_time": "trainer.max_time ran out",
        "early_stopping": "early stopping ended it after few steps",
    }
    if reason in causes:
        return causes[reason]
    if trainer.limit_train_batches not in (1.0, None):
        return f"trainer.limit_train_batches={trainer.limit_train_batches}"
    return (
        f"trainer.max_epochs={trainer.max_epochs} of {trainer.num_training_batches} batches "
        "each: a small training set, or too few epochs"
    )


def _one_batch_cause(trainer: L.Trainer) -> str:
    """Why an epoch of this run is one optimizer step: Lightning's own settings, or the data."""
    if trainer.overfit_batches:
        return f"trainer.overfit_batches={trainer.overfit_batches} trains the same batches"
    loader = trainer.train_dataloader
    full = len(loader) if loader is not None and hasattr(loader, "__len__") else None
    if full is not None and full > trainer.num_training_batches:
        return (
            f"trainer.limit_train_batches={trainer.limit_train_batches} keeps "
            f"{trainer.num_training_batches} of the {full} batches"
        )
    if trainer.accumulate_grad_batches > 1:
        return f"accumulate_grad_batches={trainer.accumulate_grad_batches} spans the epoch"
    return "the batch is as large as the training set"


def report_section(findings: list[dict[str, Any]]) -> list[str]:
    """The report's section for the training doctor's findings."""
    lines = ["## Training doctor", ""]
    if not findings:
        return [*lines, "No problem found."]
    for f in findings:
        where = f" (epoch {f['epoch']})" if f.get("epoch") is not None else ""
        lines += [
            f"- **{f['check']}**{where}: {f['message']}",
            f"  - likely causes: {f['causes']}",
            f"  - try: {f['fixes']}",
        ]
    return lines
