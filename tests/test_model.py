import functools
import math

import lightning as L
import pytest
import torch
from conftest import bare_trainer
from torch.utils.data import DataLoader, TensorDataset

from mlplab.errors import ConfigError
from mlplab.losses import CrossEntropy, ProbabilityMAE, ProbabilityMSE
from mlplab.model import MLP
from mlplab.module import Classifier


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


def test_classifier_tracks_lightnings_current_hook_like_any_module(tmp_path):
    # Classifier stores `_current_fx_name` without nn.Module.__setattr__ (mlplab.speedups):
    # hooks must still see their own name, and self.log must still find the running hook.
    class LogsEveryStep(Classifier):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.log("step_loss", loss, on_step=True, on_epoch=False)
            return loss

    class SeenHooks(L.Callback):
        def __init__(self) -> None:
            self.names: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.names.append(pl_module._current_fx_name)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.names.append(pl_module._current_fx_name)

    torch.manual_seed(0)
    module = LogsEveryStep(
        MLP((4,), 3, hidden_sizes=[5]),
        CrossEntropy(),
        functools.partial(torch.optim.SGD, lr=0.1),
    )
    seen = SeenHooks()
    data = TensorDataset(torch.randn(8, 4), torch.arange(8) % 3)
    trainer = bare_trainer(tmp_path, [seen], limit_train_batches=2)
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert seen.names == ["on_train_batch_start", "on_before_optimizer_step"] * 2
    assert "step_loss" in trainer.callback_metrics
    assert module._current_fx_name is None  # restored after the run
    module.extra = torch.nn.Linear(2, 2)  # any other attribute still goes through nn.Module
    assert "extra.weight" in dict(module.named_parameters())


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


def test_callbacks_keep_their_own_batch_hooks_and_lose_only_the_no_ops():
    from lightning.pytorch.demos.boring_classes import BoringModel

    from mlplab.speedups import skip_unused_batch_hooks

    class CountSteps(L.Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_end(self, *args) -> None:
            self.steps += 1

    counter = CountSteps()
    skip_unused_batch_hooks([counter])
    assert counter.on_before_backward is None and counter.on_train_batch_start is None
    assert callable(counter.on_train_batch_end) and callable(counter.on_train_epoch_end)
    trainer = L.Trainer(
        max_steps=5,
        callbacks=[counter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert counter.steps == 5
