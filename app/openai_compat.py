"""OpenAI's Images API on top of the job service, so any OpenAI SDK is a client.

`POST /v1/images/generations` runs txt2img and `POST /v1/images/edits` runs inpainting, both
synchronously as OpenAI's endpoints do: the request is held until the job ends. Requests
are translated into our own submits (every limit applies); answers and errors take OpenAI's
shapes: `{"created", "data": [{"url"} | {"b64_json"}]}` and
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from app.service import Submission
from jobs import defaults
from jobs.errors import InvalidImage, InvalidRequest, LatentqError

OPENAI_MODELS = (
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
)
"""OpenAI's model names: a client that sends one gets this service's default model."""

IGNORED = {
    "quality",
    "style",
    "user",
    "moderation",
    "safety_identifier",
    "output_compression",
    "input_fidelity",
    "complexity",
}
"""Fields OpenAI clients send that change nothing here."""

OWN = {"seed", "steps", "guidance_scale", "negative_prompt", "scheduler", "priority"}
"""Our own fields, accepted as extensions (`extra_body` in OpenAI's SDKs)."""

_SIZE = re.compile(r"^([0-9]{2,5})x([0-9]{2,5})$")


class Unsupported(InvalidRequest):
    code = "unsupported_parameter"


def openai_error(exc: LatentqError) -> tuple[int, dict[str, Any]]:
    """Our error as OpenAI's error body; OpenAI answers field problems with 400."""
    status = 400 if exc.status == 422 else exc.status
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status in (401, 403):
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    body = {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}
    return status, body


def _model(value: object) -> str | None:
    if value is None or value in OPENAI_MODELS:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("model must be a string", param="model")
    return value


def _int(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", param=name) from None


def _size(value: object) -> tuple[int, int] | None:
    if value in (None, "", "auto"):
        return None
    match = _SIZE.match(str(value))
    if match is None:
        raise InvalidRequest("size must be 'auto' or WIDTHxHEIGHT, e.g. 512x512", param="size")
    return int(match.group(1)), int(match.group(2))


def _common(fields: dict[str, Any], job_type: str) -> tuple[dict[str, Any], str]:
    """Our job fields from OpenAI's, and the response format asked for."""
    fields = dict(fields)
    response_format = fields.pop("response_format", None) or "url"
    if response_format not in ("url", "b64_json"):
        raise InvalidRequest("response_format must be 'url' or 'b64_json'", param="response_format")
    job: dict[str, Any] = {"type": job_type, "prompt": fields.pop("prompt", None)}
    if job["prompt"] is None:
        raise InvalidRequest("prompt is required", param="prompt")
    model = _model(fields.pop("model", None))
    if model is not None:
        job["model"] = model
    if fields.get("n") is not None:
        job["n"] = _int(fields.pop("n"), "n")
    fields.pop("n", None)
    output_format = fields.pop("output_format", None)
    if output_format is not None:
        if output_format not in ("png", "jpeg", "webp"):
            raise Unsupported(
                f"output_format {output_format!r} is not available; use png, jpeg or webp",
                param="output_format",
            )
        job["output_format"] = output_format
    if fields.pop("background", None) == "transparent":
        raise Unsupported("transparent backgrounds are not available", param="background")
    if fields.pop("stream", None) in (True, "true"):
        raise Unsupported(
            "streamed images are not available; poll /v1/jobs or use its events stream",
            param="stream",
        )
    if _int(fields.pop("partial_images", 0) or 0, "partial_images"):
        raise Unsupported("partial images are not available", param="partial_images")
    for name in list(fields):
        if name in IGNORED:
            fields.pop(name)
        elif name in OWN:
            job[name] = fields.pop(name)
    if fields:
        name = sorted(fields)[0]
        raise Unsupported(f"{name} is not supported by this service", param=name)
    return job, response_format


def generation(body: dict[str, Any]) -> tuple[Submission, str]:
    """A txt2img submit from an images.generate request."""
    fields = dict(body)
    size = _size(fields.pop("size", None))
    job, response_format = _common(fields, "txt2img")
    if size is not None:
        job["width"], job["height"] = size
    return Submission(fields=job, files={}), response_format


def edit(
    form: dict[str, Any], images: list[bytes], mask: bytes | None, *, max_pixels: int
) -> tuple[Submission, str]:
    """An inpaint submit from an images.edit request (transparent in the mask = repaint).

    Decodes, resizes and encodes images: call it in the thread pool. The size asked for is
    checked against the input limits before any of that (a resize to 99999x99999 would
    take tens of gigabytes)."""
    if len(images) != 1:
        raise InvalidRequest("send exactly one image to edit", param="image")
    fields = dict(form)
    size = _size(fields.pop("size", None))
    if size is not None:
        _check_edit_size(size, max_pixels)
    job, response_format = _common(fields, "inpaint")
    source = _open(images[0], "image")
    if mask is not None:
        alpha = _alpha(_open(mask, "mask"), "mask")
        if alpha.size != source.size:
            raise InvalidRequest(
                f"mask is {alpha.size[0]}x{alpha.size[1]} but image is "
                f"{source.size[0]}x{source.size[1]}; they must be the same size",
                param="mask",
            )
    else:
        # As OpenAI does: without a mask, the image's own transparency says what to repaint.
        alpha = _alpha(source, "image")
    repaint = alpha.point(lambda a: 255 if a < 128 else 0)
    rgb = source.convert("RGB")
    if size is not None and size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        repaint = repaint.resize(size, Image.Resampling.NEAREST)
    files = {"image": _png(rgb), "mask": _png(repaint)}
    return Submission(fields=job, files=files), response_format


def _check_edit_size(size: tuple[int, int], max_pixels: int) -> None:
    low, high = defaults.SIZE_MIN, defaults.SIZE_MAX
    width, height = size
    if not (low <= width <= high and low <= height <= high):
        raise InvalidRequest(
            f"size {width}x{height}: each side must be {low} to {high} pixels", param="size"
        )
    if width * height > max_pixels:
        raise InvalidRequest(
            f"size {width}x{height} is more than {max_pixels} pixels", param="size"
        )


def _open(data: bytes, field: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"])
        if image.width * image.height > 2048 * 2048:
            raise InvalidRequest(f"{field} has too many pixels", param=field)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidImage(f"{field} is not a PNG, JPEG or WebP image", param=field) from None
    return image


def _alpha(image: Image.Image, field: str) -> Image.Image:
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        raise InvalidRequest(
            f"{field} has no transparency: its transparent pixels mark what to repaint",
            param=field,
        )
    return image.convert("RGBA").getchannel("A")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
