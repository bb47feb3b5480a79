"""Malformed requests: every one gets a 4xx in the envelope of API.md, none a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.images import encoded, noise_image, png_b64

IMAGE = png_b64(noise_image(64, 64))
MASK = png_b64(Image.new("L", (64, 64), 255))
OK = {"type": "txt2img", "prompt": "x"}


def envelope(
    response: httpx.Response, status: int | tuple[int, ...], param: str | None = "any"
) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}
    error: dict[str, Any] = body["error"]
    assert error["code"] and error["code"].islower() and " " not in error["code"]
    assert len(error["message"]) > 10 and "Traceback" not in error["message"]
    if param != "any":
        assert error["param"] == param, error
    return error


BAD_BODIES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("no type", {"prompt": "x"}, 422, "type"),
    ("unknown type", {"type": "txt2gif", "prompt": "x"}, 422, "type"),
    ("no prompt", {"type": "txt2img"}, 422, "prompt"),
    ("empty prompt", {**OK, "prompt": "   "}, 422, "prompt"),
    ("long prompt", {**OK, "prompt": "y" * 4001}, 422, "prompt"),
    ("prompt not a string", {**OK, "prompt": ["a"]}, 422, "prompt"),
    ("width not multiple of 8", {**OK, "width": 100}, 422, "width"),
    ("width too small", {**OK, "width": 56}, 422, "width"),
    ("height too large", {**OK, "height": 4096}, 422, "height"),
    ("width is text", {**OK, "width": "wide"}, 422, "width"),
    ("steps zero", {**OK, "steps": 0}, 422, "steps"),
    ("steps too many", {**OK, "steps": 151}, 422, "steps"),
    ("guidance negative", {**OK, "guidance_scale": -1}, 422, "guidance_scale"),
    ("guidance too high", {**OK, "guidance_scale": 31}, 422, "guidance_scale"),
    ("seed negative", {**OK, "seed": -1}, 422, "seed"),
    ("seed too big", {**OK, "seed": 2**32}, 422, "seed"),
    ("n zero", {**OK, "n": 0}, 422, "n"),
    ("n nine", {**OK, "n": 9}, 422, "n"),
    ("bad format", {**OK, "output_format": "bmp"}, 422, "output_format"),
    ("bad priority", {**OK, "priority": "asap"}, 422, "priority"),
    ("unknown field", {**OK, "sampler": "euler"}, 422, "sampler"),
    ("unknown model", {**OK, "model": "sdxl-nope"}, 404, "model"),
    (
        "task not served",
        {"type": "inpaint", "model": "txt-only", "prompt": "x", "image": IMAGE, "mask": MASK},
        422,
        "type",
    ),
    ("scheduler not listed", {**OK, "scheduler": "lms"}, 422, "scheduler"),
    ("scheduler unknown", {**OK, "scheduler": "warp"}, 422, "scheduler"),
    ("image on txt2img", {**OK, "image": IMAGE}, 422, "image"),
    (
        "width on inpaint",
        {"type": "inpaint", "prompt": "x", "image": IMAGE, "mask": MASK, "width": 64},
        422,
        "width",
    ),
    ("inpaint without image", {"type": "inpaint", "prompt": "x", "mask": MASK}, 422, "image"),
    ("inpaint without mask", {"type": "inpaint", "prompt": "x", "image": IMAGE}, 422, "mask"),
    ("img2img without image", {"type": "img2img", "prompt": "x"}, 422, "image"),
    (
        "mask on img2img",
        {"type": "img2img", "prompt": "x", "image": IMAGE, "mask": MASK},
        422,
        "mask",
    ),
    (
        "width on img2img",
        {"type": "img2img", "prompt": "x", "image": IMAGE, "width": 64},
        422,
        "width",
    ),
    (
        "mask_blur on img2img",
        {"type": "img2img", "prompt": "x", "image": IMAGE, "mask_blur": 4},
        422,
        "mask_blur",
    ),
    (
        "img2img strength leaves no step",
        {"type": "img2img", "prompt": "x", "image": IMAGE, "strength": 0.05, "steps": 10},
        422,
        None,
    ),
    (
        "mask on outpaint",
        {"type": "outpaint", "prompt": "x", "image": IMAGE, "mask": MASK, "outpaint": {"left": 8}},
        422,
        "mask",
    ),
    (
        "strength above 1",
        {"type": "inpaint", "prompt": "x", "image": IMAGE, "mask": MASK, "strength": 1.5},
        422,
        "strength",
    ),
    (
        "strength leaves no step",
        {
            "type": "inpaint",
            "prompt": "x",
            "image": IMAGE,
            "mask": MASK,
            "strength": 0.01,
            "steps": 10,
        },
        422,
        None,
    ),
    (
        "mask_blur too big",
        {"type": "inpaint", "prompt": "x", "image": IMAGE, "mask": MASK, "mask_blur": 65},
        422,
        "mask_blur",
    ),
    (
        "image not base64",
        {"type": "inpaint", "prompt": "x", "image": "%%%", "mask": MASK},
        422,
        "image",
    ),
    (
        "image not an image",
        {
            "type": "inpaint",
            "prompt": "x",
            "image": base64.b64encode(b"hello world").decode(),
            "mask": MASK,
        },
        415,
        "image",
    ),
    (
        "image is a gif",
        {
            "type": "inpaint",
            "prompt": "x",
            "image": base64.b64encode(encoded(noise_image(64, 64), "GIF")).decode(),
            "mask": MASK,
        },
        415,
        "image",
    ),
    (
        "image too small",
        {"type": "inpaint", "prompt": "x", "image": png_b64(noise_image(32, 32)), "mask": MASK},
        422,
        "image",
    ),
    (
        "mask of another size",
        {
            "type": "inpaint",
            "prompt": "x",
            "image": IMAGE,
            "mask": png_b64(Image.new("L", (72, 64), 255)),
        },
        422,
        "mask",
    ),
    (
        "mask all black",
        {
            "type": "inpaint",
            "prompt": "x",
            "image": IMAGE,
            "mask": png_b64(Image.new("L", (64, 64), 0)),
        },
        422,
        "mask",
    ),
    (
        "image as a number",
        {"type": "outpaint", "prompt": "x", "image": 5, "outpaint": {"left": 8}},
        422,
        "image",
    ),
    (
        "outpaint without padding",
        {"type": "outpaint", "prompt": "x", "image": IMAGE},
        422,
        "outpaint",
    ),
    (
        "outpaint all zero",
        {"type": "outpaint", "prompt": "x", "image": IMAGE, "outpaint": {"left": 0, "right": 0}},
        422,
        "outpaint",
    ),
    (
        "outpaint negative",
        {"type": "outpaint", "prompt": "x", "image": IMAGE, "outpaint": {"left": -8}},
        422,
        "outpaint.left",
    ),
    (
        "outpaint not an object",
        {"type": "outpaint", "prompt": "x", "image": IMAGE, "outpaint": 16},
        422,
        "outpaint",
    ),
    ("pndm below 4 steps", {**OK, "scheduler": "pndm", "steps": 3}, 422, "steps"),
    ("unknown adapter", {**OK, "loras": [{"id": "nope"}]}, 422, "loras"),
    ("adapter scale too big", {**OK, "loras": [{"id": "a", "scale": 5}]}, 422, "loras.0.scale"),
    ("too many adapters", {**OK, "loras": [{"id": str(i)} for i in range(5)]}, 422, "loras"),
    ("adapter twice", {**OK, "loras": [{"id": "a"}, {"id": "a"}]}, 422, "loras"),
    ("adapter without id", {**OK, "loras": [{"scale": 1}]}, 422, "loras.0.id"),
    ("video on an image model", {"type": "txt2video", "prompt": "x"}, 422, "type"),
    ("video frames zero", {"type": "txt2video", "prompt": "x", "num_frames": 0}, 422, "num_frames"),
    ("video fps too high", {"type": "txt2video", "prompt": "x", "fps": 61}, 422, "fps"),
    (
        "video format",
        {"type": "txt2video", "prompt": "x", "output_format": "png"},
        422,
        "output_format",
    ),
    (
        "outpaint too large",
        {"type": "outpaint", "prompt": "x", "image": IMAGE, "outpaint": {"left": 2000}},
        422,
        "outpaint",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "param"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_bad_request_gets_a_4xx_envelope(
    api: httpx.Client, body: dict[str, Any], status: int, param: str | None
) -> None:
    envelope(api.post("/v1/jobs", json=body), status, param)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"", "application/json", 400),
        (b"[" * 100_000, "application/json", 400),
        (
            b'{"type": "txt2img", "prompt": "x", "seed": 1' + b"0" * 5000 + b"}",
            "application/json",
            400,
        ),
        (b"type=txt2img", "application/x-www-form-urlencoded", 422),
        (b"hello", "text/plain", 415),
        (b"{}", "", 415),
    ],
)
def test_malformed_bodies(
    api: httpx.Client, content: bytes, content_type: str, status: int
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    envelope(api.post("/v1/jobs", content=content, headers=headers), status)


def test_multipart_problems(api: httpx.Client) -> None:
    png = base64.b64decode(IMAGE)
    no_params = api.post("/v1/jobs", files={"image": ("i.png", png, "image/png")})
    envelope(no_params, 422, "params")
    bad_json = api.post("/v1/jobs", data={"params": "{oops"})
    envelope(bad_json, 400)
    stray = api.post("/v1/jobs", data={"params": json.dumps(OK), "prompt": "x"})
    envelope(stray, 422, "prompt")
    odd_file = api.post(
        "/v1/jobs", data={"params": json.dumps(OK)}, files={"picture": ("p.png", png, "image/png")}
    )
    envelope(odd_file, 422, "picture")
    broken = api.post(
        "/v1/jobs",
        content=b"--xyz\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    envelope(broken, (400, 422))


def test_oversized_body_is_413(api: httpx.Client) -> None:
    big = b"x" * (49 * 2**20)
    response = api.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
    envelope(response, 413)


def test_oversized_streamed_body_is_413(api: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(50):
            yield b"x" * 2**20

    response = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    envelope(response, 413)


def test_decompression_bomb_is_413(api: httpx.Client) -> None:
    bomb = Image.new("L", (12000, 12000))
    body = {
        "type": "outpaint",
        "prompt": "x",
        "outpaint": {"left": 8},
        "image": base64.b64encode(encoded(bomb, "PNG", optimize=True)).decode(),
    }
    envelope(api.post("/v1/jobs", json=body), 413, "image")


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    envelope(api.get("/v2/jobs"), 404)
    envelope(api.put("/v1/jobs/j_" + "a" * 22, json={}), 405)
    envelope(api.get("/v1/files/jobs/x/0.png"), 403)


def test_nothing_was_enqueued_by_bad_requests(api: httpx.Client) -> None:
    before = api.get("/metrics").text
    for body in ({"type": "txt2img"}, {**OK, "n": 100}, {**OK, "model": "nope"}):
        api.post("/v1/jobs", json=body)
    after = api.get("/metrics").text

    def submitted(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("latentq_jobs_submitted_total{")
        )

    assert submitted(after) == submitted(before)


def test_inputs_are_never_put_into_redis(api: httpx.Client, service: object) -> None:
    from tests.integration.services import Service

    assert isinstance(service, Service)
    image = noise_image(256, 256, seed=8)
    body = {
        "type": "outpaint",
        "prompt": "x",
        "outpaint": {"right": 8},
        "image": png_b64(image),
        "steps": 1,
    }
    job = api.post("/v1/jobs", json=body).json()
    client = service.redis.client()
    record = client.hgetall(f"latentq:job:{job['id']}")
    assert record and sum(len(v) for v in record.values()) < 4096
    assert np.asarray(image).nbytes > 100_000


def test_work_over_the_cap_is_refused(api: httpx.Client) -> None:
    # 2048 × 2048 × 150 steps × 8 images is about 5,000 megapixel-steps; the cap is 1,000.
    body = {"type": "txt2img", "prompt": "x", "width": 2048, "height": 2048, "steps": 150, "n": 8}
    error = envelope(api.post("/v1/jobs", json=body), 422, None)
    assert "megapixel-steps" in error["message"]


@pytest.mark.parametrize(
    "expires",
    ["²", "١٢٣", "1" * 5000, "9" * 40, "-1", "1e9", " 1700000000", "17000000000000000000000"],
    ids=[
        "superscript",
        "arabic-indic",
        "5000-digits",
        "40-digits",
        "negative",
        "float",
        "space",
        "huge",
    ],
)
def test_odd_file_expiries_are_refused_not_crashed(api: httpx.Client, expires: str) -> None:
    response = api.get(
        "/v1/files/jobs/anonymous/j_x/0.png", params={"expires": expires, "sig": "ab"}
    )
    assert envelope(response, 403)["code"] == "invalid_signature"


@pytest.mark.parametrize(
    "prefer",
    ["wait=" + "9" * 4301, "wait=" + "1" * 5000 + ", respond-async", "wait=²", "wait=5²"],
    ids=["4301-digits", "5000-digits", "superscript", "digit-superscript"],
)
def test_odd_prefer_waits_never_crash(api: httpx.Client, prefer: str) -> None:
    # Header values travel as Latin-1, which has superscript digits.
    headers = {"Prefer": prefer.encode("latin-1")}
    response = api.post("/v1/jobs", json={**OK, "steps": 2}, headers=headers)
    assert response.status_code in (200, 202), response.text
    applied = response.headers.get("preference-applied")
    assert applied in (None, "wait=60", "wait=5"), applied


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_prompts_that_are_not_text_are_refused(api: httpx.Client, field: str) -> None:
    """A lone surrogate is valid (escaped) JSON but no text: refused at submit, rather than
    failing the job's output after its GPU work."""
    body = json.dumps({**OK, field: "a fox \ud83e"})  # escaped: the bytes are plain ASCII
    response = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    envelope(response, 422, field)
