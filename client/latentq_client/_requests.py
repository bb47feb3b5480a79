"""Building submit requests, shared by the sync and async clients (no I/O but reading files)."""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias, TypeGuard

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from latentq_client.options import JobKind

ImageInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | PILImage"
)
"""A path, encoded image bytes, a binary file object, or a PIL image."""

LoraInput: TypeAlias = Mapping[str, float] | Iterable[str | tuple[str, float] | Mapping[str, Any]]
"""LoRA adapters by catalogue id: `{"id": scale}`, or a list of ids, `(id, scale)` pairs or
`{"id": ..., "scale": ...}` objects."""

WAIT_MAX_S = 60
"""The longest `Prefer: wait=N` the API accepts."""


@dataclass
class Submit:
    """A `POST /v1/jobs`: JSON fields, image file parts, and request headers."""

    fields: dict[str, Any]
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    wait: int | None = None

    def httpx_kwargs(self) -> dict[str, Any]:
        if not self.files:
            return {"json": self.fields, "headers": self.headers}
        # Multipart keeps images as raw bytes: base64 in JSON would add a third to the body.
        return {
            "data": {"params": json.dumps(self.fields)},
            "files": self.files,
            "headers": self.headers,
        }


def build_submit(
    kind: JobKind, prompt: str, options: Mapping[str, Any], images: Sequence[ImageInput] = ()
) -> Submit:
    """The request of one job: the options' defaults for those left out, None ones left out for
    the server's defaults, `wait` and `idempotency_key` as headers, `images` as file parts."""
    given = dict(options)
    wait = given.pop("wait", None)
    idempotency_key = given.pop("idempotency_key", None)
    body: dict[str, Any] = {"type": kind.job_type, "prompt": prompt}
    for name, option in kind.specs.items():
        value = given.pop(name, option.default)
        if option.within is not None:
            # Sent whole: a side left None is the service's default, written out.
            body.setdefault(option.within, {})[name] = option.default if value is None else value
        elif value is not None:
            body[name] = value
    body.update((name, value) for name, value in given.items() if value is not None)
    if "loras" in body:
        body["loras"] = lora_refs(body["loras"])
    submit = Submit(fields=body)
    for name, image in zip(kind.images, images, strict=True):
        submit.files[name] = image_part(image, name)
    if wait is not None:
        if wait < 0 or wait > WAIT_MAX_S:
            raise ValueError(f"wait must be between 0 and {WAIT_MAX_S} seconds, not {wait}")
        submit.wait = math.ceil(wait)
        submit.headers["Prefer"] = f"wait={submit.wait}"
    if idempotency_key is not None:
        submit.headers["Idempotency-Key"] = idempotency_key
    return submit


def lora_refs(loras: LoraInput) -> list[dict[str, Any]]:
    """`loras` in the wire form, `[{"id": ..., "scale": ...}]`; ValueError for another shape.

    Only the shape is checked here: which ids exist, how many may be combined and the range of
    scales are the service's to say, and it answers with the reason.
    """
    if isinstance(loras, str | bytes):
        raise ValueError(f"loras must be a list of adapters or a mapping, not the string {loras!r}")
    if isinstance(loras, Mapping):
        if isinstance(loras.get("id"), str) and set(loras) <= {"id", "scale"}:
            raise ValueError(f"loras: put one adapter in a list, loras=[{dict(loras)!r}]")
        return [_lora(adapter_id, scale, "loras") for adapter_id, scale in loras.items()]
    if not isinstance(loras, Iterable):
        raise ValueError(f"loras must be a list of adapters or a mapping, not {loras!r}")
    refs = []
    for i, item in enumerate(loras):
        where = f"loras[{i}]"
        if isinstance(item, str):
            refs.append(_lora(item, 1.0, where))
        elif isinstance(item, Mapping):
            unknown = set(item) - {"id", "scale"}
            if unknown or "id" not in item:
                raise ValueError(
                    f"{where} must have an 'id' and optionally a 'scale', not {dict(item)!r}"
                )
            refs.append(_lora(item["id"], item.get("scale", 1.0), where))
        elif isinstance(item, tuple | list) and len(item) == 2:
            refs.append(_lora(item[0], item[1], where))
        else:
            raise ValueError(
                f"{where} must be an id, an (id, scale) pair or a {{'id', 'scale'}} mapping, "
                f"not {item!r}"
            )
    return refs


def _lora(adapter_id: object, scale: object, where: str) -> dict[str, Any]:
    if not isinstance(adapter_id, str) or not adapter_id:
        raise ValueError(f"{where}: the adapter id must be a non-empty string, not {adapter_id!r}")
    # bool is a Real too, and `True` as a scale is surely a mistake.
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale):
        raise ValueError(f"{where}: the scale of {adapter_id!r} must be a number, not {scale!r}")
    return {"id": adapter_id, "scale": float(scale)}


def lora_arg(value: str) -> tuple[str, float]:
    """`ID[:SCALE]` as `(id, scale)`; adapter ids hold no colon, scales may be negative."""
    adapter_id, colon, scale = value.rpartition(":")
    if not colon:
        adapter_id, scale = value, "1"
    try:
        number = float(scale)
    except ValueError:
        number = math.nan
    if not adapter_id or not math.isfinite(number):
        raise ValueError(f"{value!r} is not ID or ID:SCALE (e.g. pixel-art:0.8)")
    return adapter_id, number


def image_part(image: ImageInput, name: str) -> tuple[str, bytes, str]:
    """`(filename, bytes, content type)` of a multipart file part."""
    filename = name
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        data = path.read_bytes()
        filename = path.name
    elif _is_pil_image(image):
        out = io.BytesIO()
        image.save(out, format="PNG")
        data = out.getvalue()
    elif hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError(f"{name}: the file object must be opened in binary mode")
        filename = Path(str(getattr(image, "name", name))).name
    else:
        raise TypeError(
            f"{name} must be a path, bytes, a binary file or a PIL image, "
            f"not {type(image).__name__}"
        )
    content_type, extension = sniff(data)
    if not Path(filename).suffix and extension:
        filename += extension
    return filename, data, content_type


def sniff(data: bytes) -> tuple[str, str]:
    """The content type and extension of encoded image bytes, from their magic numbers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", ".webp"
    return "application/octet-stream", ""


def _is_pil_image(value: object) -> TypeGuard[PILImage]:
    # Checked without importing pillow: if it was never imported, value cannot be a PIL image.
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(value, module.Image)
