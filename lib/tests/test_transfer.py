"""Transfer learning: hidden layers from a checkpoint, a new head, frozen layers stay fixed."""

from __future__ import annotations

import json

import pytest
import torch
from mnist_mlp.train import train

from mlplab.errors import CheckpointError, ConfigError
from mlplab.stored import load_checkpoint
from mlplab.testing import compose_config, real_data_dir
from mlplab.transfer import pretrained_net

QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A short run on the bundled digits whose checkpoint the transfer tests start from."""
    out = tmp_path_factory.mktemp("pretrained")
    train(compose_config([*QUIET, "optimizer=momentum", "trainer.max_epochs=3"], out))
    return out


def weights(path) -> list[torch.Tensor]:
    state = load_checkpoint(path)["state_dict"]
    return [t for name, t in state.items() if name.startswith("net.") and name.endswith("weight")]


def test_frozen_layers_keep_the_pretrained_weights_and_the_rest_trains(pretrained, tmp_path):
    metrics = train(
        compose_config(
            [
                *QUIET,
                "model=pretrained",
                f"model.checkpoint={pretrained}",
                "model.freeze=[1]",
                "trainer.max_epochs=2",
            ],
            tmp_path,
        )
    )
    before = weights(pretrained / "checkpoints" / "best.ckpt")
    after = weights(tmp_path / "checkpoints" / "last.ckpt")
    assert torch.equal(after[0], before[0])  # hidden layer 1: frozen
    assert not torch.equal(after[1], before[1])  # hidden layer 2: fine-tuned from the checkpoint
    assert (after[1] - before[1]).abs().max() < 0.1 * before[1].abs().max()
    assert metrics["trainable_params"] == 256 * 128 + 128 + 128 * 10 + 10
    assert metrics["num_params"] == 784 * 256 + 256 + metrics["trainable_params"]
    assert metrics["test/acc"] > 0.5


def test_the_new_head_is_sized_for_the_new_classes_and_freshly_initialized(pretrained):
    net = pretrained_net((1, 28, 28), 3, str(pretrained), freeze=[1, 2])
    head = net.layers[-1]
    assert head.out_features == 3 and torch.count_nonzero(head.bias) == 0
    assert [p.requires_grad for p in net.parameters()] == [False] * 4 + [True] * 2
    # The architecture comes from the checkpoint, not from this call.
    assert [m.out_features for m in net.layers if isinstance(m, torch.nn.Linear)] == [256, 128, 3]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"freeze": [3]}, ConfigError, r"model\.freeze=\[3\] is not allowed: .* 1 to 2"),
        ({"input_shape": (100,)}, CheckpointError, "trained on 784 inputs, this data has 100"),
    ],
)
def test_impossible_transfers_are_refused(pretrained, kwargs, error, message):
    args = {"input_shape": (1, 28, 28), "num_outputs": 10, "checkpoint": str(pretrained), **kwargs}
    with pytest.raises(error, match=message):
        pretrained_net(**args)


def test_transfer_fashion_reports_the_comparison_with_training_from_scratch(pretrained, tmp_path):
    fashion = real_data_dir("fashion_mnist")
    metrics = train(
        compose_config(
            [
                *QUIET,
                "experiment=transfer_fashion",
                f"model.checkpoint={pretrained}",
                f"data.data_dir={fashion}",
                "data.train_size=500",
                "data.val_size=1000",
                "trainer.max_epochs=2",
            ],
            tmp_path,
        )
    )
    scratch = json.loads((tmp_path / "from_scratch" / "metrics.json").read_text())
    assert metrics["from_scratch"]["test/acc"] == scratch["test/acc"]
    # Same budget: same split, epochs and architecture; only the start and the frozen layer.
    assert (
        scratch["split_sizes"]
        == metrics["split_sizes"]
        == {"train": 500, "val": 1000, "test": 10000}
    )
    assert scratch["epochs_trained"] == metrics["epochs_trained"] == 2
    assert scratch["num_params"] == scratch["trainable_params"] == metrics["num_params"]
    assert metrics["trainable_params"] < metrics["num_params"]
    report = (tmp_path / "report.md").read_text()
    assert "## Transfer vs. from scratch" in report
    assert f"| from scratch | {100 * scratch['test/acc']:.2f}% |" in report
    assert f"| pretrained (this run) | {100 * metrics['test/acc']:.2f}% |" in report


def test_a_transferred_network_can_be_transferred_again(pretrained, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for out, source in ((first, pretrained), (second, first)):
        overrides = ["model=pretrained", f"model.checkpoint={source}", "model.freeze=[1]"]
        train(compose_config([*QUIET, *overrides, "trainer.max_epochs=1"], out))
    original = weights(pretrained / "checkpoints" / "best.ckpt")
    twice = weights(second / "checkpoints" / "last.ckpt")
    assert torch.equal(twice[0], original[0])  # frozen through both transfers
    assert [w.shape for w in twice] == [w.shape for w in original]
