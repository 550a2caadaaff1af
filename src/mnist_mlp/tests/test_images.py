"""Images from class folders (``data=images``): the example set and your own folder."""

from __future__ import annotations

import json

import numpy as np
from mlplab.testing import QUIET_RUN, run_command
from PIL import Image

from ..module import Classifier


def test_your_own_image_folder_trains_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    for name, brightness in (("dark", 40), ("light", 200)):  # two classes told apart by eye
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(rng.normal(brightness, 30, (12, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    run = tmp_path / "run"
    done = run_command(
        "train.py",
        "data=images",
        f"data.path={tmp_path / 'images'}",
        "data.channels=3",
        "data.batch_size=16",
        "optimizer=momentum",
        "trainer.max_epochs=5",
        *QUIET_RUN,
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] > metrics["baseline/test_acc"]
    best = Classifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert tuple(best.hparams.input_shape) == (3, 12, 10)


def test_the_example_folder_is_written_whole_on_first_use(tmp_path):
    run = tmp_path / "run"
    overrides = ["data=digit_images", f"paths.data_dir={tmp_path}", "trainer.max_epochs=1"]
    done = run_command("train.py", *overrides, *QUIET_RUN, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    classes = sorted(p.name for p in (tmp_path / "digit_images").iterdir())
    assert classes == [str(d) for d in range(10)]
    assert sum(1 for _ in (tmp_path / "digit_images").rglob("*.png")) == 1797
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
