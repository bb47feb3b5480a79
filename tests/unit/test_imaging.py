"""Outpaint geometry, mask feathering and compositing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from jobs import defaults
from jobs.protocol import OutputFormat, Padding
from worker.imaging import (
    composite,
    encode,
    inpaint_canvas,
    outpaint_canvas,
    working_size,
)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def square_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask, "L")


@pytest.mark.parametrize("blur", [0, 4, 8])
def test_inpaint_keeps_everything_outside_the_feather(blur: int) -> None:
    image = noise(96, 80)
    canvas = inpaint_canvas(image, square_mask(96, 80, (32, 24, 64, 56)), blur)
    out = np.asarray(composite(Image.new("RGB", (96, 80), (255, 0, 0)), canvas))
    src = np.asarray(image)
    reach = 3 * blur + 2  # a Gaussian of radius r has (numerically) no weight past ~3r
    keep = np.ones((80, 96), dtype=bool)
    keep[max(0, 24 - reach) : 56 + reach, max(0, 32 - reach) : 64 + reach] = False
    assert (out[keep] == src[keep]).all()
    # Inside the mask the generated image is taken whole.
    assert (out[24:56, 32:64] == [255, 0, 0]).all()


def test_inpaint_feather_blends_at_the_edge() -> None:
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    canvas = inpaint_canvas(image, square_mask(64, 64, (16, 16, 48, 48)), 4)
    out = np.asarray(composite(Image.new("RGB", (64, 64), (200, 200, 200)), canvas))
    ramp = out[32, 0:17, 0]
    assert ramp[0] == 0 and ramp[-1] == 200
    assert 0 < ramp[-4] < 200 and (np.diff(ramp.astype(int)) >= 0).all()


def test_inpaint_mask_is_binarised_for_the_pipeline() -> None:
    mask = Image.fromarray(np.full((64, 64), 100, dtype=np.uint8), "L")  # dark grey: keep
    canvas = inpaint_canvas(noise(64, 64), mask, 0)
    assert np.asarray(canvas.mask).max() == 0


@pytest.mark.parametrize(
    "pad",
    [
        Padding(left=32),
        Padding(right=40),
        Padding(top=16, bottom=24),
        Padding(left=8, right=8, top=8, bottom=8),
        Padding(left=0, right=100, top=3, bottom=0),
    ],
)
@pytest.mark.parametrize("blur", [0, 8, 40])
def test_outpaint_geometry_and_original_in_place(pad: Padding, blur: int) -> None:
    width, height = 96, 72
    image = noise(width, height)
    canvas = outpaint_canvas(image, pad, blur)
    total = (width + pad.left + pad.right, height + pad.top + pad.bottom)
    assert canvas.image.size == canvas.mask.size == canvas.alpha.size == total

    alpha = np.asarray(canvas.alpha)
    mask = np.asarray(canvas.mask)
    inner = (slice(pad.top, pad.top + height), slice(pad.left, pad.left + width))
    # The new border is repainted fully.
    border = np.ones(alpha.shape, dtype=bool)
    border[inner] = False
    assert (alpha[border] == 255).all() and (mask[border] == 255).all()
    # The original reaches into the mask by at most the band, only on padded sides.
    depth_x = max(defaults.OUTPAINT_OVERLAP, blur)
    band_x = min(depth_x, width // 4)
    band_y = min(depth_x, height // 4)
    core = np.zeros(alpha.shape, dtype=bool)
    core[
        pad.top + (band_y if pad.top else 0) : pad.top + height - (band_y if pad.bottom else 0),
        pad.left + (band_x if pad.left else 0) : pad.left + width - (band_x if pad.right else 0),
    ] = True
    assert (alpha[core] == 0).all() and (mask[core] == 0).all()
    # Composited, the core of the original comes back exactly where it was.
    out = np.asarray(composite(Image.new("RGB", total, (0, 255, 0)), canvas))
    assert (out[core] == np.asarray(canvas.original)[core]).all()
    original_in_canvas = np.asarray(canvas.original)[inner]
    assert (original_in_canvas == np.asarray(image)).all()


def test_outpaint_canvas_extends_the_edges() -> None:
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    canvas = outpaint_canvas(image, Padding(right=64), 8)
    assert np.asarray(canvas.image)[:, 100].tolist() == [[10, 20, 30]] * 64


def test_composite_resizes_a_generated_image_of_the_working_size() -> None:
    image = noise(70, 66)
    canvas = inpaint_canvas(image, square_mask(70, 66, (0, 0, 10, 10)), 0)
    out = composite(Image.new("RGB", working_size(70, 66), (1, 2, 3)), canvas)
    assert out.size == (70, 66)
    assert (np.asarray(out)[40:, 40:] == np.asarray(image)[40:, 40:]).all()


def test_working_size_rounds_up_to_multiples_of_8() -> None:
    assert working_size(64, 64) == (64, 64)
    assert working_size(65, 71) == (72, 72)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_encode_embeds_the_parameters(fmt: OutputFormat) -> None:
    meta = {"prompt": "a cat", "seed": 42}
    data = encode(noise(64, 64), fmt, meta)
    image = Image.open(io.BytesIO(data))
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt.value]
    if fmt is OutputFormat.PNG:
        text = image.text["parameters"]  # type: ignore[attr-defined]
    elif fmt is OutputFormat.JPEG:
        text = image.info["comment"].decode()
    else:
        text = image.getexif()[0x010E]
    assert json.loads(text) == meta


def test_jpeg_holds_the_metadata_of_the_largest_job() -> None:
    """Every field at its limit, every character outside the BMP: it all fits the comment
    (at most 65,533 bytes), so no job fails after its GPU work for its metadata."""
    longest = "\U0001f98a" * defaults.PROMPT_MAX_CHARS
    meta = {
        "type": "inpaint",
        "model": "m" * 128,
        "prompt": longest,
        "negative_prompt": longest,
        "scheduler": "s" * 64,
        "loras": [{"id": "\U0001f98a" * 128, "scale": -3.25} for _ in range(defaults.LORAS_MAX)],
        "steps": defaults.STEPS_MAX,
        "guidance_scale": defaults.GUIDANCE_MAX,
        "seed": defaults.SEED_MAX,
        "job_id": "j_" + "x" * 22,
        "index": defaults.N_MAX - 1,
    }
    data = encode(noise(64, 64), OutputFormat.JPEG, meta)
    comment = Image.open(io.BytesIO(data)).info["comment"]
    assert json.loads(comment.decode()) == meta


def test_jpeg_metadata_past_the_comment_limit_is_cut_not_fatal() -> None:
    meta = {"prompt": "\U0001f98a" * 40_000, "negative_prompt": "ok", "seed": 7}
    data = encode(noise(64, 64), OutputFormat.JPEG, meta)
    comment = Image.open(io.BytesIO(data)).info["comment"]
    assert len(comment) <= 65_533
    kept = json.loads(comment.decode())
    assert kept["truncated"] is True and kept["seed"] == 7 and kept["negative_prompt"] == "ok"
    assert meta["prompt"].startswith(kept["prompt"]) and len(kept["prompt"]) > 1000
