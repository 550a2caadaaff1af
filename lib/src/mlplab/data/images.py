"""Image files as a viewer shows them: the one decoding path for every image mlplab reads.

Pillow decodes; then, in this order:

- the EXIF orientation is applied (a phone's JPEG is read upright, as a viewer shows it);
- 16-bit samples (PNG ``I;16``, ``I``) are scaled to 0-255, not clipped;
- transparency: an image whose colour is one flat value and whose picture lies in its
  alpha channel (a glyph drawn as opacity) is read from the alpha channel, bright where
  opaque; any other image with transparency is composited onto black, the background of
  MNIST-style data (a transparent pixel is no ink);
- then converted to 1 (grayscale, ITU-R 601 luma) or 3 (RGB) channels and, if asked,
  resized (bilinear).

The result is uint8 ``(C, H, W)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlplab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class UnreadableImage(DataError):
    """A file that Pillow cannot decode: not an image, a corrupt one, or a decompression bomb."""


def _decoding_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    return (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_image(
    path: str | Path,
    channels: int,
    size: tuple[int, int] | None = None,
    resize: bool = False,
    resize_hint: str = "pass resize=true",
) -> np.ndarray:
    """The image at ``path`` as uint8 ``(channels, H, W)``.

    Args:
        path: an image file Pillow reads (PNG, JPEG, BMP, WebP, ...).
        channels: 1 (grayscale) or 3 (RGB).
        size: ``(height, width)`` the image must have; ``None`` takes it as it is.
        resize: resize an image of another ``size`` (bilinear) instead of refusing it.
        resize_hint: how to ask for that, said when an image of another size is refused.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if channels not in (1, 3):
        raise DataError(f"images have 1 or 3 channels, not {channels}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # a copy, upright
            image = _eight_bit(_opaque(image), channels)
            if size is not None and image.size != (size[1], size[0]):
                if not resize:
                    raise DataError(
                        f"{path} is {image.size[0]}x{image.size[1]}, not the "
                        f"{size[1]}x{size[0]} expected: resize the images, or {resize_hint}"
                    )
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except _decoding_errors() as exc:
        raise unreadable(path, exc) from exc
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def unreadable(path: Path, exc: BaseException) -> UnreadableImage:
    """What Pillow raised for ``path``, as one line."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):  # more pixels than Pillow safely opens
        return UnreadableImage(
            f"cannot read image {path}: it has more pixels than Pillow decodes safely "
            f"({Image.MAX_IMAGE_PIXELS:,}), as a decompression bomb does"
        )
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UnreadableImage(f"cannot read image {path}: {first}")


def _opaque(image):
    """``image`` without transparency (see the module docstring)."""
    from PIL import Image

    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode not in ("LA", "RGBA", "La", "RGBa"):
        return image
    image = image.convert("RGBA") if image.mode != "LA" else image
    alpha = np.asarray(image.getchannel("A"), dtype=np.float32)
    colour = np.asarray(image, dtype=np.float32)[..., :-1]
    if alpha.min() == alpha.max():  # one opacity everywhere: the colour is the picture
        return image.convert("RGB" if image.mode == "RGBA" else "L")
    if colour.min() == colour.max():  # a flat colour: the picture is the alpha channel
        return Image.fromarray(alpha.astype(np.uint8), "L")
    blended = colour * (alpha[..., None] / 255.0)  # onto black
    mode = "RGB" if blended.shape[-1] == 3 else "L"
    pixels = np.rint(blended).astype(np.uint8)
    return Image.fromarray(pixels if mode == "RGB" else pixels[..., 0], mode)


def _eight_bit(image, channels: int):
    """``image`` in 8-bit ``L`` or ``RGB``; 16- and 32-bit samples scaled, not clipped."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16"):
            top = 65535.0
        else:  # 32-bit: the range its values use
            top = next((t for t in (255.0, 65535.0) if values.max() <= t), values.max())
        image = Image.fromarray(np.rint(np.clip(values, 0, top) * 255.0 / top).astype(np.uint8))
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = 1.0 if values.max() <= 1.0 else 255.0
        image = Image.fromarray(np.rint(np.clip(values, 0, top) * 255.0 / top).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")
