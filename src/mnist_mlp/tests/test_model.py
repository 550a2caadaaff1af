import functools
import math

import lightning as L
import numpy as np
import pytest
import torch
from mlplab.data import TensorDataModule
from mlplab.errors import ConfigError
from mlplab.testing import bare_trainer
from torch.utils.data import DataLoader, TensorDataset

from ..losses import CrossEntropy, ProbabilityMAE, ProbabilityMSE
from ..model import MLP
from ..module import UNMEASURED_KEY, UPDATE_EVERY, Classifier


def test_mlp_shapes_follow_constructor_arguments():
    net = MLP(
        input_shape=(4, 5), num_outputs=3, hidden_sizes=[8, 4], activation="tanh", dropout=0.5
    )
    out = net(torch.randn(5, 4, 5))  # images are flattened inside
    assert out.shape == (5, 3)
    widths = [(m.in_features, m.out_features) for m in net.layers if isinstance(m, torch.nn.Linear)]
    assert widths == [(20, 8), (8, 4), (4, 3)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.layers) == 2
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.layers) == 2


def test_he_init_scales_by_fan_in_and_zeroes_biases():
    torch.manual_seed(0)
    net = MLP((1, 28, 28), 10, hidden_sizes=[256, 128], init="he")
    first = net.layers[0]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.05)
    for m in net.layers:
        if isinstance(m, torch.nn.Linear):
            assert torch.count_nonzero(m.bias) == 0


def test_initial_loss_is_near_ln_num_classes():
    # A sound init and [0, 1] inputs start near chance: loss ~ ln(10) = 2.30.
    torch.manual_seed(0)
    net = MLP((784,), 10, hidden_sizes=[256, 128], init="he")
    x, y = torch.rand(2000, 784), torch.randint(0, 10, (2000,))
    loss = CrossEntropy()(net(x), y).item()
    assert abs(loss - math.log(10)) < 0.5


@pytest.mark.parametrize(
    ("bad", "allowed"),
    [
        ({"activation": "gelu"}, "relu, sigmoid, tanh"),
        ({"init": "orthogonal"}, "he, xavier, default"),
    ],
)
def test_unknown_choices_are_refused_with_the_allowed_ones(bad, allowed):
    with pytest.raises(ConfigError, match=f"is not allowed: must be one of {allowed}"):
        MLP((4,), 2, **bad)


def test_probability_losses_are_zero_for_perfect_and_positive_for_wrong_predictions():
    y = torch.tensor([0, 2])
    perfect = torch.tensor([[50.0, 0, 0], [0, 0, 50.0]])
    wrong = torch.tensor([[0, 50.0, 0], [50.0, 0, 0]])
    for loss in (ProbabilityMSE(), ProbabilityMAE()):
        assert loss(perfect, y).item() < 1e-6
        # MSE: (1 + 1) / 3 per sample; MAE: (1 + 1) / 3 per sample.
        assert loss(wrong, y).item() == pytest.approx(2 / 3, rel=1e-4)


class _Tiny(TensorDataModule):
    """240 random training images of 3 classes (and 60 to validate), served as mlplab serves
    every data set: resumable mid-epoch."""

    def load_arrays(self):
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (330, 1, 2, 3)).astype(np.uint8)
        labels = np.arange(330) % 3
        return (images[:300], labels[:300]), (images[300:], labels[300:])


@pytest.mark.parametrize("stop_after", [13, 19])
def test_a_mid_epoch_checkpoint_resumes_to_the_same_epoch_to_the_last_bit(tmp_path, stop_after):
    # 30 batches of 8, a checkpoint after 13 or 19 of them (neither a multiple of
    # UPDATE_EVERY): it holds the metrics' running states (counts and sums, a few numbers)
    # and the few steps not measured yet, and a run resumed from it logs the same epoch,
    # bit for bit, as a run that was never stopped.
    class SaveAt(L.Callback):  # between batches, as mlplab's own stop on a signal does
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == stop_after:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def fit(callbacks, ckpt_path=None):
        torch.manual_seed(0)
        module = Classifier(
            {"_target_": f"{MLP.__module__}.MLP", "hidden_sizes": [5]},
            {"_target_": f"{CrossEntropy.__module__}.CrossEntropy"},
            {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
            metrics={"acc": {"_target_": "torchmetrics.classification.MulticlassAccuracy"}},
            input_shape=(1, 2, 3),
            num_outputs=3,
        )
        trainer = bare_trainer(tmp_path, callbacks)
        trainer.fit(module, _Tiny(batch_size=8, val_size=60), ckpt_path=ckpt_path)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    whole = fit([SaveAt()])
    checkpoint = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    metric_states = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("net.")}
    assert sum(v.numel() for v in metric_states.values()) < 100  # counts and sums
    measured = stop_after // UPDATE_EVERY * UPDATE_EVERY
    assert checkpoint["state_dict"]["mean_loss.fit.weight"] == measured * 8
    assert len(checkpoint[UNMEASURED_KEY]) == stop_after - measured
    assert fit([], ckpt_path=tmp_path / "mid.ckpt") == whole


def test_epoch_loss_is_the_mean_over_examples_with_an_uneven_last_batch(tmp_path):
    # 10 examples in batches of 4, 4, 2 and a learning rate of 0: the epoch's train loss must
    # be the loss over all 10 examples, so the short batch weighs half as much.
    torch.manual_seed(0)
    x, y = torch.randn(10, 6), torch.tensor([0, 1, 2] * 3 + [0])
    module = Classifier(
        MLP((6,), 3, hidden_sizes=[5]),
        CrossEntropy(),
        functools.partial(torch.optim.SGD, lr=0.0),
        metrics={
            "acc": {
                "_target_": "torchmetrics.classification.MulticlassAccuracy",
                "average": "micro",
            }
        },
        num_outputs=3,
    )
    trainer = bare_trainer(tmp_path, [])
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
    with torch.no_grad():
        logits = module(x)
    expected_loss = float(CrossEntropy()(logits, y))
    expected_acc = float((logits.argmax(1) == y).float().mean())
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(expected_loss, rel=1e-6)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(expected_acc)


def test_a_validation_inside_an_epoch_keeps_the_epochs_training_measures(tmp_path):
    # 32 training steps with a validation after 16 (val_check_interval=0.5): when the epoch
    # ends, its training loss and L1 penalty still cover all 32 steps.
    seen = {}

    class Weights(L.Callback):  # callbacks' epoch-end hooks run before the module's
        def on_train_epoch_end(self, trainer, pl_module):
            seen["loss"] = int(pl_module.mean_loss["fit"].weight)
            seen["l1"] = int(pl_module.mean_l1.weight)

    torch.manual_seed(0)
    module = Classifier(
        MLP((6,), 3, hidden_sizes=[5]),
        CrossEntropy(),
        functools.partial(torch.optim.SGD, lr=0.01),
        l1=1e-3,
        num_outputs=3,
    )
    data = TensorDataset(torch.randn(32, 6), torch.arange(32) % 3)
    trainer = bare_trainer(tmp_path, [Weights()], val_check_interval=0.5)
    trainer.fit(module, DataLoader(data, batch_size=1), DataLoader(data, batch_size=8))
    assert seen == {"loss": 32, "l1": 32}
    assert "train/l1_penalty" in trainer.callback_metrics
