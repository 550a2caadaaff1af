"""Every option of every config group composes and instantiates into the real object."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from mnist_mlp.losses import CrossEntropy, Huber, ProbabilityMAE, ProbabilityMSE
from mnist_mlp.metrics import build_metrics
from mnist_mlp.model import MLP
from omegaconf import OmegaConf

from mlplab.config import validate_config
from mlplab.data import TensorDataModule
from mlplab.errors import ConfigError
from mlplab.instantiate import instantiate_each, instantiate_optional
from mlplab.testing import compose_config, group_options

EXPECTED_OPTIONS = {
    "data": [
        "diabetes",
        "digit_images",
        "fashion_mnist",
        "images",
        "mnist",
        "mnist_5k",
        "table",
        "wine",
    ],
    "augment": ["none", "shift"],
    "module": ["classifier", "regressor"],
    "model": ["cnn", "mlp", "pretrained"],
    "metrics": ["accuracy", "classification_all", "regression"],
    "loss": ["cross_entropy", "huber", "mae", "mse"],
    "optimizer": ["adagrad", "adam", "adamw", "momentum", "sgd"],
    "regularization": ["dropout", "l1", "l2", "lesson", "none"],
    "scheduler": ["cosine", "exponential", "none", "plateau", "step"],
    "callbacks": ["default", "lr_find", "none"],
    "logger": ["csv", "mlflow", "none", "tensorboard", "wandb"],
    "trainer": ["cpu", "ddp", "ddp_cpu", "default", "gpu", "lightning"],
    "experiment": [
        "deep_sigmoid",
        "lesson",
        "lr_too_high",
        "lr_too_low",
        "mnist_best",
        "overfit_small_data",
        "shuffled_labels",
        "tabular_classification",
        "tabular_regression",
        "transfer_fashion",
    ],
    "debug": ["smoke"],
    "hparams_search": ["optuna"],
}


def test_the_groups_offer_the_documented_options():
    """Every option mlplab ships is there; a user's own option added to a group (as the
    README's "Make it your own" says to) is theirs, and no test's business."""
    for group, shipped in EXPECTED_OPTIONS.items():
        missing = set(shipped) - set(group_options(group))
        assert not missing, f"{group}: {sorted(missing)} missing"


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["data"])
def test_data_options(option, tmp_path):
    needs = {"table": ["data.path=my_table.csv"], "images": ["data.path=my_images"]}.get(option, [])
    cfg = compose_config([f"data={option}", *needs], tmp_path)
    validate_config(cfg)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, TensorDataModule)
    assert datamodule.batch_size == (128 if "mnist" in option else cfg.data.batch_size)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("cross_entropy", CrossEntropy),
        ("mse", ProbabilityMSE),
        ("mae", ProbabilityMAE),
        ("huber", Huber),
    ],
)
def test_loss_options(option, expected, tmp_path):
    cfg = compose_config([f"loss={option}"], tmp_path)
    assert isinstance(instantiate(cfg.loss), expected)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("init", ["he", "xavier", "default"])
def test_model_options(activation, init, tmp_path):
    cfg = compose_config([f"model.activation={activation}", f"model.init={init}"], tmp_path)
    net = instantiate(cfg.model, input_shape=(1, 28, 28), num_outputs=10)
    assert isinstance(net, MLP)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["optimizer"])
def test_optimizer_options_are_partials_of_torch_optimizers(option, tmp_path):
    cfg = compose_config([f"optimizer={option}"], tmp_path)
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optimizer)(params)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)  # from regularization
    if option == "momentum":
        assert optimizer.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["scheduler"])
def test_scheduler_options(option, tmp_path):
    cfg = compose_config([f"scheduler={option}"], tmp_path)
    factory = instantiate_optional(cfg.scheduler)
    if option == "none":
        assert factory is None
        return
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = factory(optimizer)
    assert hasattr(scheduler, "step")


@pytest.mark.parametrize(
    ("option", "values"),
    [
        ("lesson", (1e-4, 0.0, 0.3)),
        ("none", (0.0, 0.0, 0.0)),
        ("l2", (1e-4, 0.0, 0.0)),
        ("l1", (0.0, 1e-5, 0.0)),
        ("dropout", (0.0, 0.0, 0.3)),
    ],
)
def test_regularization_reaches_optimizer_loss_and_model(option, values, tmp_path):
    cfg = compose_config([f"regularization={option}"], tmp_path)
    weight_decay, l1, dropout = values
    assert cfg.optimizer.weight_decay == pytest.approx(weight_decay)
    assert cfg.regularization.l1 == pytest.approx(l1)
    net = instantiate(cfg.model, input_shape=(4,), num_outputs=2)
    dropouts = [m.p for m in net.layers if isinstance(m, torch.nn.Dropout)]
    assert dropouts == ([dropout] * 2 if dropout else [])


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["callbacks"])
def test_callback_options(option, tmp_path):
    cfg = compose_config([f"callbacks={option}"], tmp_path)
    callbacks = instantiate_each(cfg.callbacks)
    assert all(isinstance(c, L.Callback) for c in callbacks)
    names = sorted(type(c).__name__ for c in callbacks)
    if option == "lr_find":  # the default ones, and the range test
        names.remove("LearningRateSuggestion")
    if option in ("default", "lr_find"):
        assert names == [
            "CompareFromScratch",
            "EarlyStopping",
            "LearningRateMonitor",
            "MlflowSummary",
            "ModelCheckpoint",  # best.ckpt
            "ModelCheckpoint",  # last.ckpt, every epoch
            "RunReport",
            "TQDMProgressBar",
            "TensorBoardHParams",
            "TrainingDoctor",
            "WandbSummary",
        ]
        early = next(c for c in callbacks if type(c).__name__ == "EarlyStopping")
        assert early.patience == 5 and early.monitor == "val/loss"
    else:
        assert names == []


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["logger"])
def test_logger_options(option, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose_config([f"logger={option}"], tmp_path)
    loggers = instantiate_each(cfg.logger)
    names = sorted(type(lg).__name__ for lg in loggers)
    expected = {
        "csv": ["ResumableCSVLogger"],
        "mlflow": ["ResumableMLFlowLogger"],
        "none": [],
        "tensorboard": ["TensorBoardLogger"],
        "wandb": ["WandbLogger"],
    }[option]
    assert names == expected
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            assert logger.experiment.settings.mode == "offline"  # real run, not logged in
            logger.experiment.finish()


@pytest.mark.parametrize("option", ["cpu", "default"])
def test_trainer_options(option, tmp_path):
    cfg = compose_config([f"trainer={option}"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer, L.Trainer)
    assert trainer.max_epochs == 30


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["metrics"])
def test_metrics_options_measure_real_outputs(option, tmp_path):
    cfg = compose_config([f"metrics={option}"], tmp_path)
    metrics = build_metrics(OmegaConf.to_container(cfg.metrics, resolve=True), num_outputs=3)
    if option == "regression":
        preds, target = torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
        values = metrics(preds, target)
        assert set(values) == {"mae", "rmse", "r2"}
        assert float(values["mae"]) == pytest.approx(0.25)
        assert float(values["rmse"]) == pytest.approx(0.5)
        assert float(values["r2"]) == pytest.approx(1 - 1 / 5)  # 1 - SS_res / SS_tot
        return
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    target = torch.tensor([0, 1, 0, 2])  # 3 of 4 right
    values = metrics(logits, target)
    assert float(values["acc"]) == pytest.approx(0.75)
    if option == "classification_all":
        assert set(values) == {"acc", "f1", "auroc", "error"}
        assert float(values["error"]) == pytest.approx(0.25)
        assert 0.5 < float(values["auroc"]) <= 1.0 and 0.5 < float(values["f1"]) < 1.0


@pytest.mark.parametrize("option", ["gpu", "ddp"])
def test_gpu_trainer_options_compose(option, tmp_path):
    cfg = compose_config([f"trainer={option}"], tmp_path)
    assert cfg.trainer.accelerator == "gpu"
    if torch.cuda.is_available():
        assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


def test_ddp_cpu_trainer_option_instantiates(tmp_path):
    cfg = compose_config(["trainer=ddp_cpu"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False)
    assert (trainer.num_devices, type(trainer.strategy).__name__) == (2, "DDPStrategy")


@pytest.mark.parametrize("option", EXPECTED_OPTIONS["experiment"])
def test_every_experiment_composes_and_passes_validation(option, tmp_path):
    needs = ["model.checkpoint=some/run"] if option.startswith("transfer") else []
    cfg = compose_config([f"experiment={option}", *needs], tmp_path)
    validate_config(cfg)
    assert cfg.trainer.max_epochs >= 5


def test_lesson_experiment_is_exactly_the_lesson(tmp_path):
    cfg = compose_config(["experiment=lesson"], tmp_path)
    validate_config(cfg)
    assert cfg.data._target_ == "mnist_mlp.data.IdxDataModule"
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.batch_size) == (50000, 10000, 128)
    assert list(cfg.model.hidden_sizes) == [256, 128]
    assert (cfg.model.activation, cfg.model.init, cfg.model.dropout) == ("relu", "he", 0.3)
    assert cfg.optimizer._target_ == "torch.optim.SGD" and "momentum" not in cfg.optimizer
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.01, 1e-4)
    assert cfg.loss._target_ == "mnist_mlp.losses.CrossEntropy"
    assert "_target_" not in cfg.scheduler
    assert cfg.trainer.max_epochs == 30
    assert cfg.callbacks.early_stopping.patience == 5
    assert cfg.seed == 42


def test_debug_smoke_turns_off_loggers_and_shortens_training(tmp_path):
    cfg = compose_config(["debug=smoke"], tmp_path)
    validate_config(cfg)
    assert instantiate_each(cfg.logger) == []
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 5


def test_default_seed_is_fixed_and_resolved_config_is_plain_data(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.seed == 42
    assert cfg.data.shuffle_seed == 42
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["optimizer"]["weight_decay"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "regularization.dropout=1.0",
            "regularization.dropout=1.0 is not allowed: must be a number in [0, 1)",
        ),
        ("optimizer.lr=0", "optimizer.lr=0 is not allowed: must be a number > 0"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed: must be an integer >= 1"),
        (
            "callbacks.early_stopping.patience=-1",
            "callbacks.early_stopping.patience=-1 is not allowed",
        ),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_allowed_range(override, message, tmp_path):
    cfg = compose_config([override], tmp_path)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
