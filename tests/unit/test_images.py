"""Input images: encodings, formats, sizes, decompression bombs."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from jobs.errors import InvalidImage, InvalidRequest, PayloadTooLarge
from jobs.images import decode_base64, load_image
from tests.images import encoded, noise_image

LIMITS = {"max_bytes": 2**20, "max_pixels": 2048 * 2048}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_become_png(fmt: str) -> None:
    loaded = load_image(encoded(noise_image(80, 72, seed=1), fmt), "image", mode="RGB", **LIMITS)
    assert (loaded.width, loaded.height) == (80, 72)
    assert Image.open(io.BytesIO(loaded.png)).format == "PNG"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidImage, match="accepted format"):
        load_image(encoded(noise_image(64, 64, seed=1), fmt), "image", mode="RGB", **LIMITS)


def test_not_an_image() -> None:
    with pytest.raises(InvalidImage):
        load_image(b"definitely not an image", "image", mode="RGB", **LIMITS)
    with pytest.raises(InvalidImage, match="empty"):
        load_image(b"", "image", mode="RGB", **LIMITS)


def test_truncated_image() -> None:
    data = encoded(noise_image(64, 64, seed=1), "PNG")
    with pytest.raises(InvalidImage):
        load_image(data[: len(data) // 2], "image", mode="RGB", **LIMITS)


def test_too_many_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        load_image(
            encoded(noise_image(64, 64, seed=1), "PNG"),
            "image",
            mode="RGB",
            max_bytes=100,
            max_pixels=10**7,
        )


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 10000x10000 black PNG compresses to a few kB.
    bomb = encoded(Image.new("L", (10000, 10000)), "PNG", optimize=True)
    assert len(bomb) < LIMITS["max_bytes"]
    with pytest.raises(PayloadTooLarge, match="pixels"):
        load_image(bomb, "image", mode="RGB", **LIMITS)


@pytest.mark.parametrize("size", [(63, 64), (64, 32), (2049, 64)])
def test_sides_out_of_range(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidRequest, match="each side"):
        load_image(
            encoded(noise_image(*size, seed=1), "PNG"),
            "image",
            mode="RGB",
            max_bytes=2**24,
            max_pixels=2**24,
        )


def test_transparency_becomes_white_and_masks_become_grey() -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    loaded = load_image(encoded(clear, "PNG"), "image", mode="RGB", **LIMITS)
    assert Image.open(io.BytesIO(loaded.png)).getpixel((5, 5)) == (255, 255, 255)
    mask = load_image(encoded(noise_image(64, 64, seed=1), "PNG"), "mask", mode="L", **LIMITS)
    assert Image.open(io.BytesIO(mask.png)).mode == "L"


def test_exif_orientation_is_applied() -> None:
    image = noise_image(96, 64, seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    loaded = load_image(encoded(image, "JPEG", exif=exif.tobytes()), "image", mode="RGB", **LIMITS)
    assert (loaded.width, loaded.height) == (64, 96)


def test_base64_and_data_urls() -> None:
    raw = encoded(noise_image(64, 64, seed=1), "PNG")
    plain = base64.b64encode(raw).decode()
    assert decode_base64(plain, "image", 2**20) == raw
    assert decode_base64("data:image/png;base64," + plain, "image", 2**20) == raw
    wrapped = "\n".join(plain[i : i + 76] for i in range(0, len(plain), 76))
    assert decode_base64(wrapped, "image", 2**20) == raw
    for bad in ("not base64!!", 12, None, "data:image/png,rawbytes"):
        with pytest.raises(InvalidRequest):
            decode_base64(bad, "image", 2**20)
    with pytest.raises(PayloadTooLarge):
        decode_base64(plain, "image", 100)
