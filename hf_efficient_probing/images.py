"""Images in, 8-bit RGB out: the one checked decoder every path of the package reads images through.

Data sets hold images in every PIL mode. ``convert("RGB")`` gets several of them wrong: 16-bit images saturate to
white, transparent pixels turn into whatever colour hides under them. :func:`to_rgb` handles each mode explicitly;
:func:`decode_image` opens a file, bytes or a `datasets` image and fails with an error that names what could not be
read (a training split's row, a file) and how to go on, instead of a bare PIL traceback. Training, the token cache,
the attention maps, the per-query analysis and the crop-scale probe all decode through it.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; the message names it and says how to go on."""


def decode_image(source, where: str = "the image") -> Image.Image:
    """``source`` (a PIL image, a path, bytes, or a `datasets` ``{"bytes", "path"}`` dict) as 8-bit RGB.

    ``where`` names the image in the error (e.g. ``"the image at index 7 of the train split"``)."""
    try:
        if isinstance(source, dict):  # a `datasets` Image feature read with decode=False
            source = source.get("bytes") or source.get("path")
        if isinstance(source, (bytes, bytearray)):
            source = Image.open(io.BytesIO(source))
        elif isinstance(source, (str, os.PathLike)):
            source = Image.open(source)
        if not isinstance(source, Image.Image):
            raise TypeError(f"expected an image, a path or bytes, got {type(source).__name__}")
        source.load()
        return to_rgb(source)
    except Exception as error:
        raise ImageDecodeError(
            f"Cannot read {where}: {type(error).__name__}: {error}. Fix or remove that file (with a training run, "
            "--skip_unreadable leaves such images out)."
        ) from error


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert an image of any PIL mode to 8-bit RGB.

    High-bit-depth grey images (``I;16*``, ``I``, ``F``) are rescaled to 0-255 rather than clipped; images with
    transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent index) are composited over ``background``;
    CMYK, YCbCr, palette and 1-bit images use PIL's conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    if (image.mode == "P" and "transparency" in image.info) or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (*background, 255))
        return Image.alpha_composite(canvas, image).convert("RGB")
    return image.convert("RGB")


def _grey_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth grey array to 0-255: 16-bit by its full range, float by [0, 1] (or its own range)."""
    array = array.astype(np.float64)
    if mode == "F":
        low, high = (
            (0.0, 1.0) if array.size == 0 or (array.min() >= 0 and array.max() <= 1) else (array.min(), array.max())
        )
    else:  # 16-bit PNG/TIFF data (PIL opens it as "I;16" or "I")
        low, high = 0.0, 65535.0 if array.size and array.max() > 255 else 255.0
    scaled = (array - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
