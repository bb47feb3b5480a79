"""Images as the tests send them: encoded bytes, base64 for JSON bodies, and the images to
encode (noise, or one colour)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """`image` saved in `fmt` (`PNG`, `JPEG`, …), with Pillow's save `options`."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png(image: Image.Image | np.ndarray) -> bytes:
    """`image` as PNG; an array is taken as 8-bit RGB pixels."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8), "RGB")
    return encoded(image, "PNG")


def png_b64(image: Image.Image) -> str:
    """`image` as PNG in base64, as a JSON body carries it."""
    return base64.b64encode(png(image)).decode()


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """RGB noise, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def solid(color: str | tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Image.Image:
    """An RGB image of one colour."""
    return Image.new("RGB", size, color)
