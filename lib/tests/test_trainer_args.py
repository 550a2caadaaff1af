"""conf/trainer/lightning.yaml is Lightning's Trainer signature, and the trainer config
composes from it."""

from __future__ import annotations

from omegaconf import OmegaConf

from mlplab.testing import PROJECT, compose_config
from mlplab.trainer_args import GENERATED, closest, known_arguments, render, signature_defaults


def test_generated_file_matches_the_installed_lightning() -> None:
    assert (PROJECT / "conf" / GENERATED).read_text() == render(), (
        "run: python -m mlplab.trainer_args"
    )


def test_every_trainer_argument_is_a_key_with_lightnings_default(tmp_path) -> None:
    trainer = OmegaConf.to_container(compose_config([], tmp_path).trainer, resolve=True)
    defaults = signature_defaults()
    assert set(trainer) - {"_target_"} == set(defaults)
    changed = {k for k, v in defaults.items() if trainer[k] != v}
    # mlplab's own choices, each explained in conf/trainer/default.yaml.
    assert changed == {"max_epochs", "precision", "deterministic", "plugins", "devices"}


def test_fast_dev_run_needs_no_plus(tmp_path) -> None:
    cfg = compose_config(["trainer.fast_dev_run=true", "trainer.overfit_batches=2"], tmp_path)
    assert cfg.trainer.fast_dev_run is True and cfg.trainer.overfit_batches == 2


def test_closest_argument() -> None:
    assert closest("max_epoch", known_arguments()) == "max_epochs"
    assert closest("acumulate_grad_batches", known_arguments()) == "accumulate_grad_batches"
    assert closest("zzz", known_arguments()) is None
