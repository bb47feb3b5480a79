"""Mask feathering, compositing, outpaint geometry and output encoding (no torch).

Inpainting and outpainting both come down to: a canvas, a binary mask of what the pipeline
may repaint, and an alpha that says how much of the generated image to keep per pixel. Where
alpha is 0 the original pixel is kept exactly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo

from jobs import defaults
from jobs.protocol import OutputFormat, Padding


@dataclass(frozen=True)
class Canvas:
    """What an inpaint pipeline runs on, and how its output is put back."""

    image: Image.Image
    """RGB canvas the pipeline starts from."""
    mask: Image.Image
    """L, 255 where the pipeline may repaint, 0 elsewhere."""
    alpha: Image.Image
    """L, how much of the generated image each output pixel takes (0 keeps the original)."""
    original: Image.Image
    """RGB, the pixels to keep where alpha is 0 (the canvas for inpaint)."""


def inpaint_canvas(image: Image.Image, mask: Image.Image, blur: int) -> Canvas:
    """Repaint the white of `mask`, feathered outwards by `blur` pixels."""
    binary = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    if blur:
        blurred = np.asarray(binary.filter(ImageFilter.GaussianBlur(blur)))
        # Masked pixels stay fully repainted; the feather only spreads outwards.
        alpha_array = np.maximum(blurred, np.asarray(binary))
        alpha = Image.fromarray(alpha_array.astype(np.uint8), "L")
    else:
        alpha = binary
    repaint = alpha.point(lambda v: 255 if v > 0 else 0)
    rgb = image.convert("RGB")
    return Canvas(image=rgb, mask=repaint, alpha=alpha, original=rgb)


def outpaint_canvas(image: Image.Image, pad: Padding, blur: int) -> Canvas:
    """Grow the canvas by `pad`, repaint the new border and a band of the original next to it.

    The band is `max(OUTPAINT_OVERLAP, blur)` pixels deep (at most a quarter of the image);
    inside it alpha ramps from 1 at the original's edge down to 0 over `blur` pixels, so the
    seam blends while the rest of the original comes back unchanged.
    """
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    canvas = np.pad(rgb, ((pad.top, pad.bottom), (pad.left, pad.right), (0, 0)), mode="edge")
    total_h, total_w = canvas.shape[:2]

    alpha = np.ones((total_h, total_w), dtype=np.float32)
    inner = np.zeros((height, width), dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    # Depth of each original pixel from each edge that gets padding.
    depths = []
    if pad.left:
        depths.append((xs, width))
    if pad.right:
        depths.append((width - 1 - xs, width))
    if pad.top:
        depths.append((ys, height))
    if pad.bottom:
        depths.append((height - 1 - ys, height))
    for depth, side in depths:
        band = min(max(defaults.OUTPAINT_OVERLAP, blur), side // 4)
        if band <= 0:
            continue
        ramp = min(blur, band)
        if ramp:
            side_alpha = np.clip((band - depth) / ramp, 0.0, 1.0)
        else:
            side_alpha = (depth < band).astype(np.float32)
        inner = np.maximum(inner, np.broadcast_to(side_alpha, inner.shape))
    alpha[pad.top : pad.top + height, pad.left : pad.left + width] = inner
    alpha_image = Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L")
    return Canvas(
        image=Image.fromarray(canvas, "RGB"),
        mask=alpha_image.point(lambda v: 255 if v > 0 else 0),
        alpha=alpha_image,
        original=Image.fromarray(canvas, "RGB"),
    )


def composite(generated: Image.Image, canvas: Canvas) -> Image.Image:
    """The generated image where alpha says so, the original elsewhere (exactly where 0)."""
    if generated.size != canvas.original.size:
        generated = generated.resize(canvas.original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), canvas.original, canvas.alpha)


def working_size(width: int, height: int) -> tuple[int, int]:
    """The size a pipeline runs at: each side rounded up to a multiple of 8."""
    step = defaults.SIZE_MULTIPLE
    return (-(-width // step) * step, -(-height // step) * step)


JPEG_COMMENT_MAX = 65_533
"""Most bytes of a JPEG comment (a COM segment's length field counts itself)."""


def encode(image: Image.Image, fmt: OutputFormat, metadata: dict[str, Any]) -> bytes:
    """Encode an output image with its generation parameters embedded.

    PNG: `tEXt` chunks `parameters` (JSON) and `Software`; JPEG: a comment (UTF-8 JSON, cut
    to fit); WebP: EXIF ImageDescription.
    """
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
    out = io.BytesIO()
    if fmt is OutputFormat.PNG:
        info = PngInfo()
        info.add_text("parameters", text)
        info.add_text("Software", "latentq")
        # Level 1: a 512x512 image encodes in ~50 ms instead of ~140 ms at level 4, for ~15%
        # more bytes; the encode runs between jobs, while the device waits.
        image.save(out, format="PNG", pnginfo=info, compress_level=1)
    elif fmt is OutputFormat.JPEG:
        comment = _jpeg_comment(metadata)
        image.convert("RGB").save(out, format="JPEG", quality=92, comment=comment)
    else:
        exif = Image.Exif()
        exif[0x010E] = text  # ImageDescription
        exif[0x0131] = "latentq"  # Software
        image.save(out, format="WEBP", quality=92, exif=exif.tobytes())
    return out.getvalue()


def _jpeg_comment(metadata: dict[str, Any]) -> bytes:
    """The metadata as UTF-8 JSON within a JPEG comment's 65,533 bytes.

    Escaped JSON would take 12 bytes for a character outside the BMP, so two 4,000-character
    prompts of emoji would not fit, and the job would fail after all its GPU work; as UTF-8
    the largest job fits. Past the limit anyway, the longest strings are cut (and
    `truncated` set) rather than the image lost."""
    kept = dict(metadata)
    while True:
        text = json.dumps(kept, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        data = text.encode()
        over = len(data) - JPEG_COMMENT_MAX
        if over <= 0:
            return data
        strings = [k for k, v in kept.items() if isinstance(v, str) and v]
        if not strings:
            raise ValueError(f"the image metadata does not fit a JPEG comment ({len(data)} bytes)")
        longest = max(strings, key=lambda k: len(kept[k]))
        raw = kept[longest].encode()
        # Cut `over` bytes (a character cut in two is dropped whole); escapes in the JSON may
        # need another round.
        kept[longest] = raw[: max(0, len(raw) - over - 16)].decode(errors="ignore")
        kept["truncated"] = True
