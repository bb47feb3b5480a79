"""Decoding and checking input images before they are stored.

An input arrives as base64 (or a `data:image/...;base64,` URL) or as a multipart file. It
must be PNG, JPEG or WebP, within the byte and pixel limits, and is stored as a lossless PNG
with its EXIF orientation applied, so the worker never sees the client's encoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from jobs import defaults
from jobs.errors import InvalidImage, InvalidRequest, PayloadTooLarge

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class InputImage:
    png: bytes
    width: int
    height: int
    brightest: int
    """The highest channel value: a mask whose brightest pixel is below 128 repaints nothing."""


def decode_base64(value: object, field: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a base64 string or a data: URL", param=field)
    match = _DATA_URL.match(value)
    if match:
        value = value[match.end() :]
    elif value.startswith("data:"):
        raise InvalidRequest(f"{field}: only base64 data: URLs are accepted", param=field)
    # base64 is 4/3 of the bytes: refuse an oversized string before decoding it.
    if len(value) > max_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"{field} is larger than {max_bytes} bytes", param=field)
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} is not valid base64", param=field) from None


def load_image(
    data: bytes, field: str, *, max_bytes: int, max_pixels: int, mode: str
) -> InputImage:
    """Check and normalise an input image; `mode` is "RGB" for images, "L" for masks."""
    if not data:
        raise InvalidImage(f"{field} is empty", param=field)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field} is larger than {max_bytes} bytes", param=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(
                io.BytesIO(data), formats=list(defaults.INPUT_IMAGE_FORMATS)
            )
            # Only the header is read so far: refuse huge canvases before decoding pixels.
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"{field} is {width}x{height}, more than {max_pixels} pixels", param=field
                )
            image.load()
    except UnidentifiedImageError:
        raise InvalidImage(
            f"{field} is not an image in an accepted format (PNG, JPEG or WebP)", param=field
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise PayloadTooLarge(f"{field} has too many pixels", param=field) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{field} could not be decoded: {exc}", param=field) from None
    image = ImageOps.exif_transpose(image)
    width, height = image.size
    low, high = defaults.SIZE_MIN, defaults.SIZE_MAX
    if not (low <= width <= high and low <= height <= high):
        raise InvalidRequest(
            f"{field} is {width}x{height}; each side must be {low} to {high} pixels", param=field
        )
    if image.mode != mode:
        if mode == "RGB" and image.mode in ("RGBA", "LA", "P", "PA"):
            # Transparent pixels become white rather than whatever colour they hid.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    histogram = image.histogram()  # 256 counts per channel
    brightest = max(i % 256 for i, count in enumerate(histogram) if count)
    return InputImage(png=out.getvalue(), width=width, height=height, brightest=brightest)
