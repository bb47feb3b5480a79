"""The Python SDK against `httpx.MockTransport`: requests, errors, waiting, saving (no network)."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import inspect
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import latentq_client._wait as wait_module
from latentq_client import (
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    Conflict,
    Job,
    JobCanceled,
    JobFailed,
    LatentqConnectionError,
    LatentqError,
    NotFound,
    PayloadTooLarge,
    ProgressBar,
    ProgressUpdate,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    UnsupportedMedia,
    WaitTimeout,
)
from latentq_client.job import output_paths
from latentq_client.progress import Reporter
from tests.images import encoded, png, solid

BASE = "http://api.test"
JOB_ID = "j_test"


# -- a fake service -------------------------------------------------------------------------


def job_json(status: str = "queued", job_id: str = JOB_ID, **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": job_id,
        "type": "txt2img",
        "model": "tiny",
        "status": status,
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": None,
        "finished_at": None,
        "queue_position": 1 if status == "queued" else None,
        "progress": {"step": 0, "total_steps": 4, "fraction": 0.0},
        "params": {"prompt": "a fox", "seed": 42},
        "result": None,
        "error": None,
    }
    if status == "succeeded":
        job["progress"] = {"step": 4, "total_steps": 4, "fraction": 1.0}
        job["result"] = {"images": [image_json(0, 42)]}
    job.update(extra)
    return job


def image_json(index: int, seed: int, content_type: str = "image/png") -> dict[str, Any]:
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[content_type]
    return {
        "url": f"{BASE}/v1/files/jobs/{JOB_ID}/{index}.{extension}?expires=1&sig=s",
        "width": 64,
        "height": 64,
        "seed": seed,
        "content_type": content_type,
    }


def video_json(index: int, seed: int, webp: bool = True) -> dict[str, Any]:
    files = f"{BASE}/v1/files/jobs/{JOB_ID}"
    return {
        "url": f"{files}/{index}.mp4?expires=1&sig=s",
        "width": 64,
        "height": 64,
        "num_frames": 9,
        "fps": 8,
        "seed": seed,
        "content_type": "video/mp4",
        "webp_url": f"{files}/{index}.webp?expires=1&sig=s" if webp else None,
    }


def mp4_bytes(index: int = 0) -> bytes:
    return b"\x00\x00\x00\x18ftypisom" + bytes([index]) * 16


def webp_bytes(index: int = 0) -> bytes:
    return b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes([index]) * 16


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in the given chunks; an exception in the list is raised."""

    def __init__(self, chunks: Iterable[bytes | Exception]) -> None:
        self.chunks = list(chunks)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk


def event_stream(*chunks: bytes | Exception) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks))


def envelope(status: int, code: str, message: str, param: str | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "param": param}}
    return httpx.Response(status, json=body)


Route = Callable[[httpx.Request], httpx.Response] | httpx.Response | list[httpx.Response]


class FakeAPI:
    """Routes `(method, path)` to a response, a list served in turn, or a function."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []

    def route(self, method: str, path: str, response: Route) -> None:
        self.routes[(method, path)] = response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return envelope(404, "not_found", f"no route {request.method} {request.url.path}")
        if isinstance(route, list):
            response = route.pop(0) if len(route) > 1 else route[0]
        elif isinstance(route, httpx.Response):
            response = route
        else:
            return route(request)
        # A fresh response each time, so that one route can answer (and stream) repeatedly.
        return httpx.Response(
            response.status_code, headers=response.headers, stream=response.stream
        )

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def client(self, **kwargs: Any) -> Client:
        return Client(BASE, transport=httpx.MockTransport(self), **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        return AsyncClient(BASE, transport=httpx.MockTransport(self), **kwargs)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    monkeypatch.delenv("LATENTQ_API_KEY", raising=False)
    return FakeAPI()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wait_module, "POLL_MIN_S", 0.001)
    monkeypatch.setattr(wait_module, "POLL_MAX_S", 0.01)


def accepted(status: str = "queued", **extra: Any) -> httpx.Response:
    return httpx.Response(202, json=job_json(status, **extra))


def multipart(request: httpx.Request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """The parts of a multipart body: name -> (filename, content type, bytes)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    assert message.is_multipart()
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        content_type = part.get("content-type")
        parts[name] = (part.get_filename(), str(content_type) if content_type else None, payload)
    return parts


def test_the_sdk_loads_httpx_only() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys, latentq_client.cli; print(' '.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(root / "client")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert "httpx" in loaded
    assert not {"PIL", "pydantic", "jobs", "app", "worker", "torch", "fastapi"} & loaded


# -- requests -------------------------------------------------------------------------------


def test_generate_sends_json_with_only_the_given_fields(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted())
    with api.client() as client:
        job = client.generate("a fox", width=128, seed=7, guidance_scale=0.0, negative_prompt="")
    request = api.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "type": "txt2img",
        "prompt": "a fox",
        "width": 128,
        "seed": 7,
        "n": 1,
        "guidance_scale": 0.0,
        "negative_prompt": "",
    }
    for header in ("prefer", "idempotency-key", "authorization"):
        assert header not in request.headers
    assert isinstance(job, Job)
    assert (job.id, job.status, job.queue_position) == (JOB_ID, "queued", 1)
    assert not job.is_done


def test_generate_passes_every_option_and_extra_fields(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted())
    with api.client() as client:
        client.generate(
            "a fox",
            model="tiny",
            width=64,
            height=96,
            steps=3,
            guidance_scale=7.5,
            scheduler="euler",
            seed=1,
            n=2,
            negative_prompt="blur",
            output_format="webp",
            priority="low",
            future_field={"x": 1},
            ignored=None,
        )
    body = json.loads(api.requests[0].content)
    assert body == {
        "type": "txt2img",
        "prompt": "a fox",
        "model": "tiny",
        "width": 64,
        "height": 96,
        "steps": 3,
        "guidance_scale": 7.5,
        "scheduler": "euler",
        "seed": 1,
        "n": 2,
        "negative_prompt": "blur",
        "output_format": "webp",
        "priority": "low",
        "future_field": {"x": 1},
    }


def test_headers_prefer_idempotency_and_authorization(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", httpx.Response(200, json=job_json("succeeded")))
    with api.client(api_key="k-123") as client:
        job = client.generate("a fox", wait=30, idempotency_key="key-1")
    headers = api.requests[0].headers
    assert headers["prefer"] == "wait=30"
    assert headers["idempotency-key"] == "key-1"
    assert headers["authorization"] == "Bearer k-123"
    assert headers["user-agent"].startswith("latentq-client/")
    assert job.is_done and job.seeds == [42]


def test_api_key_from_the_environment(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTQ_API_KEY", "from-env")
    api.route("GET", "/v1/models", httpx.Response(200, json={"data": [{"id": "tiny"}]}))
    with api.client() as client:
        assert client.models() == [{"id": "tiny"}]
    with api.client(api_key="explicit") as client:
        client.models()
    assert [r.headers["authorization"] for r in api.requests] == [
        "Bearer from-env",
        "Bearer explicit",
    ]


def test_prefer_wait_is_bounded_and_extends_the_read_timeout(api: FakeAPI) -> None:
    seen: list[dict[str, Any]] = []

    def submit(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return accepted()

    api.route("POST", "/v1/jobs", submit)
    with api.client(timeout=10) as client:
        with pytest.raises(ValueError, match="wait"):
            client.generate("a fox", wait=61)
        with pytest.raises(ValueError, match="wait"):
            client.generate("a fox", wait=-1)
        client.generate("a fox", wait=60)
        client.generate("a fox")
    assert [t["read"] for t in seen] == [70, 10]


def test_inpaint_sends_multipart_with_params_and_files(api: FakeAPI, tmp_path: Path) -> None:
    api.route("POST", "/v1/jobs", accepted(type="inpaint"))
    image_path = tmp_path / "house.png"
    image_path.write_bytes(png(solid("blue")))
    mask = Image.new("L", (8, 8), 255)
    with api.client() as client:
        client.inpaint("a red door", image_path, mask, strength=0.8, mask_blur=4, seed=3)
    request = api.requests[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart(request)
    assert set(parts) == {"params", "image", "mask"}
    assert json.loads(parts["params"][2]) == {
        "type": "inpaint",
        "prompt": "a red door",
        "strength": 0.8,
        "mask_blur": 4,
        "seed": 3,
        "n": 1,
    }
    assert parts["image"][:2] == ("house.png", "image/png")
    assert parts["image"][2] == image_path.read_bytes()
    assert parts["mask"][:2] == ("mask.png", "image/png")
    assert Image.open(io.BytesIO(parts["mask"][2])).mode == "L"
    assert b"base64" not in request.content


def test_outpaint_sends_the_padding_and_accepts_bytes_and_files(
    api: FakeAPI, tmp_path: Path
) -> None:
    api.route("POST", "/v1/jobs", accepted(type="outpaint"))
    with api.client() as client:
        client.outpaint(
            "a wide beach", encoded(Image.new("RGB", (8, 8)), "JPEG"), left=64, right=32
        )
        (tmp_path / "in.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
        with (tmp_path / "in.webp").open("rb") as handle:
            client.outpaint("a wide beach", handle, top=8)
    first, second = (multipart(r) for r in api.requests)
    assert json.loads(first["params"][2]) == {
        "type": "outpaint",
        "prompt": "a wide beach",
        "outpaint": {"left": 64, "right": 32, "top": 0, "bottom": 0},
        "n": 1,
    }
    assert first["image"][:2] == ("image.jpg", "image/jpeg")
    assert second["image"][:2] == ("in.webp", "image/webp")


EVERY_JOB = {"model", "steps", "guidance_scale", "scheduler", "seed", "n", "negative_prompt"}
EVERY_JOB |= {"priority", "loras", "wait", "idempotency_key", "webhook", "webhook_events"}


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
@pytest.mark.parametrize(
    ("method", "images", "options"),
    [
        ("generate", [], {"width", "height", "output_format"}),
        ("img2img", ["image"], {"strength", "output_format"}),
        ("inpaint", ["image", "mask"], {"strength", "mask_blur", "output_format"}),
        (
            "outpaint",
            ["image"],
            {"left", "right", "top", "bottom", "strength", "mask_blur", "output_format"},
        ),
        ("video", [], {"num_frames", "fps", "width", "height"}),
    ],
)
def test_the_job_methods_name_their_options(
    client_class: type[Client | AsyncClient], method: str, images: list[str], options: set[str]
) -> None:
    signature = inspect.signature(getattr(client_class, method))
    params = signature.parameters.values()
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["self", "prompt", *images]
    keywords = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    assert set(keywords) == EVERY_JOB | options
    sides = {"left", "right", "top", "bottom"}
    assert keywords == {
        name: 0 if name in sides else 1 if name == "n" else None for name in keywords
    }


def test_none_leaves_an_option_to_the_service(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted())
    with api.client() as client:
        client.outpaint("a beach", png(solid("red")), left=8, top=None, n=None)  # type: ignore[arg-type]
        client.generate("a fox", webhook="https://example.test/hook", webhook_events=["start"])
    outpaint, generate = api.requests
    assert json.loads(multipart(outpaint)["params"][2]) == {
        "type": "outpaint",
        "prompt": "a beach",
        "outpaint": {"left": 8, "right": 0, "top": 0, "bottom": 0},
    }
    assert json.loads(generate.content) == {
        "type": "txt2img",
        "prompt": "a fox",
        "n": 1,
        "webhook": "https://example.test/hook",
        "webhook_events": ["start"],
    }


def test_an_image_of_another_type_is_refused(api: FakeAPI) -> None:
    with api.client() as client, pytest.raises(TypeError, match="image must be a path"):
        client.outpaint("x", 42, left=8)  # type: ignore[arg-type]
    assert api.requests == []


def test_get_cancel_and_models(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("running")))
    api.route("DELETE", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("canceled")))
    api.route("GET", "/v1/models", httpx.Response(200, json={"data": [{"id": "tiny"}]}))
    with api.client() as client:
        assert client.get(JOB_ID).status == "running"
        assert client.cancel(JOB_ID).status == "canceled"
        assert client.models() == [{"id": "tiny"}]
        job = client.get(JOB_ID)
        assert job.cancel() is job and job.status == "canceled"
    assert api.paths()[:3] == [
        f"GET /v1/jobs/{JOB_ID}",
        f"DELETE /v1/jobs/{JOB_ID}",
        "GET /v1/models",
    ]


def test_job_ids_are_escaped_in_paths(api: FakeAPI) -> None:
    with api.client() as client, pytest.raises(NotFound):
        client.get("../v1/models")
    assert api.requests[0].url.raw_path == b"/v1/jobs/..%2Fv1%2Fmodels"


def test_job_fields() -> None:
    raw = job_json("succeeded", error=None)
    raw["result"]["images"].append(image_json(1, 43))
    job = Job(raw, Client(BASE))
    assert job.params == {"prompt": "a fox", "seed": 42}
    assert job.progress == {"step": 4, "total_steps": 4, "fraction": 1.0}
    assert job.result is not None and len(job.image_results) == 2
    assert job.seeds == [42, 43]
    assert (job.error, job.queue_position, job.model, job.type) == (None, None, "tiny", "txt2img")
    assert job.raw == raw
    assert repr(job) == f"Job(id='{JOB_ID}', status='succeeded')"


def test_video_sends_the_video_fields(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted(type="txt2video"))
    with api.client() as client:
        client.video("a fox running", seed=5)
        job = client.video(
            "a fox running",
            num_frames=17,
            fps=12,
            width=64,
            height=96,
            model="tiny-video",
            steps=3,
            guidance_scale=6.0,
            scheduler="euler",
            seed=5,
            n=2,
            negative_prompt="blur",
            priority="high",
            loras={"motion": 0.5},
            wait=10,
            idempotency_key="v-1",
            webhook="https://example.test/hook",
        )
    first, second = api.requests
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.content) == {
        "type": "txt2video",
        "prompt": "a fox running",
        "seed": 5,
        "n": 1,
    }
    assert json.loads(second.content) == {
        "type": "txt2video",
        "prompt": "a fox running",
        "num_frames": 17,
        "fps": 12,
        "width": 64,
        "height": 96,
        "model": "tiny-video",
        "steps": 3,
        "guidance_scale": 6.0,
        "scheduler": "euler",
        "seed": 5,
        "n": 2,
        "negative_prompt": "blur",
        "priority": "high",
        "loras": [{"id": "motion", "scale": 0.5}],
        "webhook": "https://example.test/hook",
    }
    assert (second.headers["prefer"], second.headers["idempotency-key"]) == ("wait=10", "v-1")
    assert job.type == "txt2video" and job.is_video


@pytest.mark.parametrize(
    "loras",
    [
        {"pixel-art": 0.8, "ink": 1},
        [("pixel-art", 0.8), ("ink", 1.0)],
        [["pixel-art", 0.8], "ink"],
        [{"id": "pixel-art", "scale": 0.8}, {"id": "ink"}],
        ({"id": "pixel-art", "scale": 0.8}, ("ink", 1)),
    ],
)
def test_loras_in_every_shape_go_out_in_the_wire_form(api: FakeAPI, loras: Any) -> None:
    api.route("POST", "/v1/jobs", accepted())
    with api.client() as client:
        client.generate("a fox", loras=loras)
    assert json.loads(api.requests[0].content)["loras"] == [
        {"id": "pixel-art", "scale": 0.8},
        {"id": "ink", "scale": 1.0},
    ]


def test_loras_on_every_job_type(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted())
    loras = [("style", -0.5)]
    with api.client() as client:
        client.generate("a", loras=loras)
        client.img2img("b", png(solid("red")), loras=loras)
        client.inpaint("c", png(solid("red")), png(solid("red")), loras=loras)
        client.outpaint("d", png(solid("red")), left=8, loras=loras)
        client.video("e", loras=loras)
        client.generate("f", loras=[])
        client.generate("g")
    generate, img2img, inpaint, outpaint, video, empty, none = api.requests
    wire = [{"id": "style", "scale": -0.5}]
    for request in (generate, video):
        assert json.loads(request.content)["loras"] == wire
    for request in (img2img, inpaint, outpaint):
        assert json.loads(multipart(request)["params"][2])["loras"] == wire
    assert json.loads(empty.content)["loras"] == []
    assert "loras" not in json.loads(none.content)


def test_async_video_and_loras(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted(type="txt2video"))

    async def scenario() -> None:
        async with api.async_client() as client:
            await client.video("a fox running", num_frames=9, fps=8, loras=["motion"])
            await client.img2img("b", png(solid("red")), loras={"style": 2})

    asyncio.run(scenario())
    video, img2img = api.requests
    assert json.loads(video.content) == {
        "type": "txt2video",
        "prompt": "a fox running",
        "num_frames": 9,
        "fps": 8,
        "n": 1,
        "loras": [{"id": "motion", "scale": 1.0}],
    }
    assert json.loads(multipart(img2img)["params"][2])["loras"] == [{"id": "style", "scale": 2.0}]


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ("pixel-art", "not the string"),
        (42, "list of adapters"),
        ({"id": "pixel-art", "scale": 0.8}, "put one adapter in a list"),
        ({"pixel-art": "high"}, "scale of 'pixel-art' must be a number"),
        ({"pixel-art": True}, "must be a number"),
        ({"pixel-art": float("nan")}, "must be a number"),
        ([""], "non-empty string"),
        ([None], "loras\\[0\\] must be an id"),
        ([("a", 1.0), ("b", 1.0, 2.0)], "loras\\[1\\] must be an id"),
        ([(1, 0.5)], "adapter id must be a non-empty string"),
        ([{"name": "a"}], "must have an 'id'"),
        ([{"id": "a", "weight": 2}], "must have an 'id'"),
    ],
)
def test_bad_loras_are_refused_before_any_request(api: FakeAPI, loras: Any, message: str) -> None:
    with api.client() as client, pytest.raises(ValueError, match=message):
        client.generate("a fox", loras=loras)
    assert api.requests == []


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (422, BadRequest),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (415, UnsupportedMedia),
        (429, RateLimited),
        (503, ServiceUnavailable),
        (500, ServerError),
        (502, ServerError),
    ],
)
def test_errors_map_from_the_envelope(api: FakeAPI, status: int, kind: type[LatentqError]) -> None:
    api.route("POST", "/v1/jobs", envelope(status, "some_code", "fix this", "width"))
    with api.client() as client, pytest.raises(kind) as caught:
        client.generate("x", width=500)
    error = caught.value
    assert (error.status, error.code, error.message, error.param) == (
        status,
        "some_code",
        "fix this",
        "width",
    )
    assert str(error) == "fix this"
    assert isinstance(error, LatentqError)


def test_service_unavailable_is_a_server_error_with_retry_after(api: FakeAPI) -> None:
    response = envelope(503, "service_unavailable", "retry shortly")
    response.headers["Retry-After"] = "5"
    api.route("GET", "/v1/models", response)
    with api.client() as client, pytest.raises(ServerError) as caught:
        client.models()
    assert isinstance(caught.value, ServiceUnavailable)
    assert caught.value.retry_after == 5


def test_rate_limited_carries_retry_after(api: FakeAPI) -> None:
    response = envelope(429, "queue_full", "the queue of tiny is full")
    response.headers["Retry-After"] = "7"
    api.route("POST", "/v1/jobs", response)
    with api.client() as client, pytest.raises(RateLimited) as caught:
        client.generate("x")
    assert caught.value.retry_after == 7.0
    assert caught.value.code == "queue_full"


@pytest.mark.parametrize(
    ("response", "kind", "code", "message"),
    [
        (httpx.Response(500, text="Internal Server Error"), ServerError, "http_500", "Internal"),
        (httpx.Response(502, html="<h1>Bad gateway</h1>"), ServerError, "http_502", "<h1>Bad"),
        (httpx.Response(404, json={"detail": "Not Found"}), NotFound, "not_found", "Not Found"),
        (httpx.Response(422, json={"error": "bad width"}), BadRequest, "invalid_request", "bad"),
        (httpx.Response(413, content=b""), PayloadTooLarge, "payload_too_large", "HTTP 413"),
        (httpx.Response(418, json=[1, 2]), LatentqError, "http_418", "HTTP 418"),
    ],
)
def test_errors_without_the_envelope(
    api: FakeAPI, response: httpx.Response, kind: type[LatentqError], code: str, message: str
) -> None:
    api.route("GET", "/v1/models", response)
    with api.client() as client, pytest.raises(kind) as caught:
        client.models()
    assert caught.value.code == code
    assert caught.value.message.startswith(message)
    assert caught.value.param is None


def test_connection_errors_are_wrapped(api: FakeAPI) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client(BASE, transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(LatentqConnectionError) as caught:
            client.models()
    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value, LatentqError)
    assert "connection refused" in str(caught.value)
    assert caught.value.code == "connection_error"


def test_a_reply_that_is_not_a_job_is_an_error(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, text="<html>proxy</html>"))
    with api.client() as client, pytest.raises(LatentqError, match="expected a JSON object"):
        client.get(JOB_ID)


# -- events and wait ------------------------------------------------------------------------


def test_events_are_parsed_across_chunks(api: FakeAPI) -> None:
    whole = (
        b": keep-alive\n\n"
        + sse("state", job_json("queued"))
        + sse("progress", {"step": 1, "total_steps": 4, "fraction": 0.25, "eta_s": None})
        + b"retry: 1000\nid: 7\n"
        + sse("succeeded", job_json("succeeded"))
    )
    chunks = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(*chunks))
    with api.client() as client:
        events = list(client.events(JOB_ID))
    assert [e.name for e in events] == ["state", "progress", "succeeded"]
    assert events[1].data == {"step": 1, "total_steps": 4, "fraction": 0.25, "eta_s": None}
    assert events[2].data["result"]["images"][0]["seed"] == 42
    assert events[2].id == "7"
    assert api.requests[0].headers["accept"] == "text/event-stream"


def test_events_of_an_unknown_job(api: FakeAPI) -> None:
    api.route("GET", "/v1/jobs/j_nope/events", envelope(404, "job_not_found", "no job"))
    with api.client() as client, pytest.raises(NotFound) as caught:
        list(client.events("j_nope"))
    assert caught.value.code == "job_not_found"


def test_wait_follows_the_event_stream(api: FakeAPI) -> None:
    running = job_json("running")
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}/events",
        event_stream(
            sse("state", job_json("queued", queue_position=2)),
            sse("state", running),
            sse("progress", {"step": 1, "total_steps": 4, "fraction": 0.25, "eta_s": 0.3}),
            b": keep-alive\n\n",
            sse("progress", {"step": 4, "total_steps": 4, "fraction": 1.0, "eta_s": 0}),
            sse("succeeded", job_json("succeeded")),
        ),
    )
    api.route("POST", "/v1/jobs", accepted())
    updates: list[ProgressUpdate] = []
    with api.client() as client:
        job = client.generate("a fox")
        assert job.wait(progress=updates.append) is job
    assert job.status == "succeeded" and job.seeds == [42]
    assert api.paths() == ["POST /v1/jobs", f"GET /v1/jobs/{JOB_ID}/events"]
    assert [(u.status, u.step, u.queue_position) for u in updates] == [
        ("queued", 0, 1),
        ("queued", 0, 2),
        ("running", 0, None),
        ("running", 1, None),
        ("running", 4, None),
        ("succeeded", 4, None),
    ]
    assert updates[3].eta_s == 0.3


def test_wait_raises_job_failed_with_the_jobs_error(api: FakeAPI) -> None:
    failed = job_json("failed", error={"code": "out_of_memory", "message": "CUDA OOM"})
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("failed", failed)))
    with api.client() as client:
        job = Job(job_json("running"), client)
        with pytest.raises(JobFailed) as caught:
            job.wait(progress=False)
    assert (caught.value.code, caught.value.message) == ("out_of_memory", "CUDA OOM")
    assert caught.value.job is job and job.status == "failed"


def test_wait_raises_job_canceled(api: FakeAPI) -> None:
    api.route(
        "GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("canceled", job_json("canceled")))
    )
    with api.client() as client, pytest.raises(JobCanceled) as caught:
        Job(job_json(), client).wait()
    assert caught.value.job.status == "canceled"


def test_wait_on_a_finished_job_makes_no_request(api: FakeAPI) -> None:
    with api.client() as client:
        job = Job(job_json("succeeded"), client)
        assert job.wait() is job
        with pytest.raises(JobFailed):
            Job(job_json("failed", error={"code": "timeout", "message": "m"}), client).wait()
    assert api.requests == []


def test_wait_polls_with_backoff_when_there_is_no_event_stream(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    monkeypatch.setattr("latentq_client.client.time.sleep", delays.append)
    monkeypatch.setattr(wait_module, "POLL_MIN_S", 0.1)
    monkeypatch.setattr(wait_module, "POLL_MAX_S", 0.2)
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        [httpx.Response(200, json=job_json(s)) for s in ("queued", "running", "running")]
        + [httpx.Response(200, json=job_json("succeeded"))],
    )
    with api.client() as client:
        job = Job(job_json(), client).wait(progress=False)
    assert job.status == "succeeded"
    assert api.paths() == [f"GET /v1/jobs/{JOB_ID}/events"] + [f"GET /v1/jobs/{JOB_ID}"] * 4
    assert delays == pytest.approx([0.1, 0.15, 0.2])


@pytest.mark.parametrize("status", [404, 405])
def test_wait_polls_when_the_events_endpoint_is_missing(api: FakeAPI, status: int) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", envelope(status, "x", "no route"))
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        [
            httpx.Response(200, json=job_json("running")),
            httpx.Response(200, json=job_json("succeeded")),
        ],
    )
    with api.client() as client:
        assert Job(job_json(), client).wait().status == "succeeded"
    assert api.paths().count(f"GET /v1/jobs/{JOB_ID}/events") == 1


def test_wait_reads_the_job_when_the_stream_breaks(api: FakeAPI) -> None:
    streams = [
        event_stream(sse("progress", {"step": 1, "total_steps": 4}), httpx.ReadError("reset")),
        event_stream(sse("progress", {"step": 2, "total_steps": 4})),
        event_stream(sse("succeeded", job_json("succeeded"))),
    ]
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", streams)
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("running")))
    with api.client() as client:
        assert Job(job_json(), client).wait().status == "succeeded"
    events, get = f"GET /v1/jobs/{JOB_ID}/events", f"GET /v1/jobs/{JOB_ID}"
    assert api.paths() == [events, get, events, get, events]


def test_wait_polls_after_repeated_stream_failures(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", envelope(502, "bad_gateway", "proxy"))
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        [httpx.Response(200, json=job_json("running"))] * 5
        + [httpx.Response(200, json=job_json("succeeded"))],
    )
    with api.client() as client:
        assert Job(job_json(), client).wait().status == "succeeded"
    assert api.paths().count(f"GET /v1/jobs/{JOB_ID}/events") == wait_module.STREAM_FAILURES_MAX


def test_wait_survives_a_few_failed_polls(api: FakeAPI) -> None:
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        [envelope(503, "service_unavailable", "redis"), httpx.Response(200, json=job_json())]
        + [envelope(503, "service_unavailable", "redis")] * 2
        + [httpx.Response(200, json=job_json("succeeded"))],
    )
    with api.client() as client:
        assert Job(job_json(), client).wait().status == "succeeded"


def test_wait_gives_up_on_a_client_error_while_polling(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", envelope(404, "job_not_found", "expired"))
    with api.client() as client, pytest.raises(NotFound):
        Job(job_json(), client).wait()


def test_wait_raises_on_a_refused_key_from_the_stream(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", envelope(403, "forbidden", "another key's job"))
    with api.client() as client, pytest.raises(AuthenticationError):
        Job(job_json(), client).wait()
    assert len(api.requests) == 1


def test_wait_times_out(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("running")))
    with api.client() as client:
        job = Job(job_json(), client)
        with pytest.raises(WaitTimeout) as caught:
            job.wait(timeout=0.05)
    assert caught.value.job is job and job.status == "running"
    assert "did not end within 0.05s" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)


def test_wait_times_out_on_a_silent_stream(api: FakeAPI) -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] <= 0.05
        return event_stream(httpx.ReadTimeout("silence", request=request))

    api.route("GET", f"/v1/jobs/{JOB_ID}/events", silent)
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("queued")))
    with api.client() as client, pytest.raises(WaitTimeout):
        Job(job_json(), client).wait(timeout=0.05)


# -- progress -------------------------------------------------------------------------------


def update(status: str = "running", step: int = 2, **extra: Any) -> ProgressUpdate:
    fields: dict[str, Any] = {
        "job_id": "j_1",
        "status": status,
        "step": step,
        "total_steps": 4,
        "fraction": step / 4,
        "eta_s": 1.5,
        "queue_position": None,
        **extra,
    }
    return ProgressUpdate(**fields)


def test_progress_bar_draws_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=8, interval=0)
    bar(update("queued", 0, queue_position=3))
    bar(update("running", 2))
    bar(update("succeeded", 4, eta_s=None))
    bar.close()
    text = out.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")
    frames = text[:-1].split("\r")[1:]
    assert frames[0] == "j_1 queued (position 3)"
    assert frames[1] == "j_1 running   [####....] 2/4  50% ETA 1.5s"
    assert frames[2].rstrip() == "j_1 succeeded [########] 4/4 100%"
    # A shorter line pads out what the longer one before it left on the screen.
    assert len(frames[2]) == len(frames[1])


def test_progress_defaults_to_a_bar_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = job_json("running")
    Reporter(None).report(job)
    assert capsys.readouterr().err == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    reporter = Reporter(None)
    reporter.report(job)
    reporter.close()
    assert terminal.getvalue().startswith(f"\r{JOB_ID} running")
    forced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", forced)
    Reporter(True).report(job)
    assert forced.getvalue().startswith("\r")


def test_progress_estimates_the_eta_when_the_server_gives_none() -> None:
    updates: list[ProgressUpdate] = []
    reporter = Reporter(updates.append)
    reporter.report(job_json("running", progress={"step": 1, "total_steps": 5, "eta_s": None}))
    assert updates[0].eta_s is None
    reporter._first = (time.monotonic() - 2.0, 1)  # step 1 was seen two seconds ago
    reporter.report(job_json("running", progress={"step": 2, "total_steps": 5}))
    assert updates[1].eta_s == pytest.approx(6.0, rel=0.05)
    assert updates[1].fraction == pytest.approx(0.4)


# -- images and save ------------------------------------------------------------------------


def finished(api: FakeAPI, count: int = 1, content_type: str = "image/png") -> dict[str, Any]:
    raw = job_json("succeeded")
    raw["result"]["images"] = [image_json(i, 42 + i, content_type) for i in range(count)]
    colors = ["red", "green", "blue"]
    for i in range(count):
        api.route(
            "GET",
            f"/v1/files/jobs/{JOB_ID}/{i}.{'png' if content_type == 'image/png' else 'jpg'}",
            httpx.Response(200, content=png(solid(colors[i]))),
        )
    return raw


def test_image_bytes_and_images(api: FakeAPI) -> None:
    with api.client() as client:
        job = Job(finished(api, 2), client)
        blobs = job.image_bytes()
        images = job.images()
    assert blobs == [png(solid("red")), png(solid("green"))]
    assert [image.getpixel((0, 0)) for image in images] == [(255, 0, 0), (0, 128, 0)]


def test_images_needs_pillow(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = finished(api)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with api.client() as client, pytest.raises(ImportError, match="latentq-client\\[images\\]"):
        Job(raw, client).images()


def test_file_urls_get_the_api_key_only_on_the_services_host(api: FakeAPI) -> None:
    raw = finished(api, 2)
    raw["result"]["images"][1]["url"] = "https://bucket.s3.test/0.png?X-Amz-Signature=x"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"img")

    with Client(BASE, api_key="secret", transport=httpx.MockTransport(handler)) as client:
        Job(raw, client).image_bytes()
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert "authorization" not in seen[1].headers


def test_save_one_image_to_the_exact_name(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        paths = Job(finished(api), client).save(tmp_path / "sub" / "fox.png")
    assert paths == [tmp_path / "sub" / "fox.png"]
    assert paths[0].read_bytes() == png(solid("red"))


def test_save_several_images_numbers_them(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        paths = Job(finished(api, 3), client).save(str(tmp_path / "fox.png"))
    assert paths == [tmp_path / f"fox-{i}.png" for i in (1, 2, 3)]
    assert [p.read_bytes() for p in paths] == [png(solid(c)) for c in ("red", "green", "blue")]


def test_save_into_a_directory(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        assert Job(finished(api), client).save(tmp_path) == [tmp_path / f"{JOB_ID}.png"]
        several = Job(finished(api, 2), client).save(f"{tmp_path}/new/")
    assert several == [tmp_path / "new" / f"{JOB_ID}-{i}.png" for i in (1, 2)]
    assert all(p.is_file() for p in several)


def test_output_names() -> None:
    assert output_paths("out", "j", [".jpg"]) == [Path("out.jpg")]
    assert output_paths("out", "j", [".png", ".png"]) == [Path("out-1.png"), Path("out-2.png")]
    assert output_paths("a/out.webp", "j", [".png"]) == [Path("a/out.webp")]
    assert output_paths("out.jpg", "j", [".jpg"] * 2) == [Path("out-1.jpg"), Path("out-2.jpg")]
    assert output_paths("d/", "j", [".jpg"]) == [Path("d/j.jpg")]


def test_save_uses_the_extension_of_the_content_type(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        paths = Job(finished(api, content_type="image/jpeg"), client).save(tmp_path / "fox")
    assert paths == [tmp_path / "fox.jpg"]


def test_save_waits_for_the_job_first(api: FakeAPI, tmp_path: Path) -> None:
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}/events",
        event_stream(sse("succeeded", finished(api))),
    )
    with api.client() as client:
        paths = Job(job_json(), client).save(tmp_path / "fox.png")
    assert paths[0].read_bytes() == png(solid("red"))


def test_save_of_a_failed_job_raises(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client, pytest.raises(JobFailed):
        Job(job_json("failed", error={"code": "x", "message": "m"}), client).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- videos ---------------------------------------------------------------------------------


def finished_video(api: FakeAPI, count: int = 1, webp: bool = True) -> dict[str, Any]:
    raw = job_json("succeeded", type="txt2video")
    raw["result"] = {"videos": [video_json(i, 42 + i, webp) for i in range(count)]}
    for i in range(count):
        files = f"/v1/files/jobs/{JOB_ID}/{i}"
        api.route("GET", f"{files}.mp4", httpx.Response(200, content=mp4_bytes(i)))
        api.route("GET", f"{files}.webp", httpx.Response(200, content=webp_bytes(i)))
    return raw


def test_video_results_outputs_and_seeds(api: FakeAPI) -> None:
    with api.client() as client:
        job = Job(finished_video(api, 2), client)
        blobs = job.file_bytes()
        webps = job.file_bytes(webp=True)
    assert job.is_video and job.image_results == []
    assert [v["num_frames"] for v in job.video_results] == [9, 9]
    assert job.outputs == job.video_results
    assert job.seeds == [42, 43]
    assert blobs == [mp4_bytes(0), mp4_bytes(1)]
    assert webps == [webp_bytes(0), webp_bytes(1)]


def test_outputs_of_an_image_job_are_its_images(api: FakeAPI) -> None:
    with api.client() as client:
        job = Job(finished(api, 2), client)
        assert not job.is_video
        assert job.outputs == job.image_results and job.video_results == []
        assert job.file_bytes() == job.image_bytes()


def test_save_a_video_writes_mp4(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        one = Job(finished_video(api), client)
        assert one.save(tmp_path / "fox") == [tmp_path / "fox.mp4"]
        assert one.save(tmp_path) == [tmp_path / f"{JOB_ID}.mp4"]
        several = Job(finished_video(api, 2), client).save(tmp_path / "run.mp4")
    assert (tmp_path / "fox.mp4").read_bytes() == mp4_bytes(0)
    assert several == [tmp_path / "run-1.mp4", tmp_path / "run-2.mp4"]
    assert [p.read_bytes() for p in several] == [mp4_bytes(0), mp4_bytes(1)]


def test_save_a_video_as_animated_webp(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client:
        paths = Job(finished_video(api, 2), client).save(tmp_path / "fox", webp=True)
    assert paths == [tmp_path / "fox-1.webp", tmp_path / "fox-2.webp"]
    assert [p.read_bytes() for p in paths] == [webp_bytes(0), webp_bytes(1)]


def test_webp_of_a_video_without_one_raises(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client, pytest.raises(ValueError, match="no animated WebP"):
        Job(finished_video(api, webp=False), client).save(tmp_path, webp=True)
    assert list(tmp_path.iterdir()) == []


def test_webp_of_an_image_job_raises(api: FakeAPI, tmp_path: Path) -> None:
    with api.client() as client, pytest.raises(ValueError, match="webp=True is for video jobs"):
        Job(finished(api), client).save(tmp_path, webp=True)
    assert api.requests == []


def test_images_of_a_video_job_raise_before_waiting(api: FakeAPI) -> None:
    with api.client() as client:
        queued = Job(job_json(type="txt2video"), client)
        done = Job(finished_video(api), client)
        for job in (queued, done):
            with pytest.raises(ValueError, match="results are videos, not images"):
                job.images()
            with pytest.raises(ValueError, match="use file_bytes\\(\\) or save\\(\\)"):
                job.image_bytes()
    assert api.requests == []


def test_save_waits_for_a_video_job(api: FakeAPI, tmp_path: Path) -> None:
    raw = finished_video(api)
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("succeeded", raw)))
    with api.client() as client:
        paths = Job(job_json(type="txt2video"), client).save(tmp_path / "clip.mp4")
    assert paths == [tmp_path / "clip.mp4"] and paths[0].read_bytes() == mp4_bytes(0)


def test_async_video_save_and_images_error(api: FakeAPI, tmp_path: Path) -> None:
    api.route("POST", "/v1/jobs", httpx.Response(200, json=finished_video(api)))

    async def scenario() -> tuple[list[Path], list[Path], list[int]]:
        async with api.async_client() as client:
            job = await client.video("a fox running", wait=30)
            with pytest.raises(ValueError, match="videos, not images"):
                await job.images()
            mp4 = await job.save(tmp_path / "fox.mp4")
            webp = await job.save(tmp_path / "fox.webp", webp=True)
            return mp4, webp, job.seeds

    mp4, webp, seeds = asyncio.run(scenario())
    assert mp4[0].read_bytes() == mp4_bytes(0) and webp[0].read_bytes() == webp_bytes(0)
    assert seeds == [42]


# -- the async client -----------------------------------------------------------------------


def test_async_generate_and_wait_via_events(api: FakeAPI, tmp_path: Path) -> None:
    api.route("POST", "/v1/jobs", accepted())
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}/events",
        event_stream(
            sse("progress", {"step": 2, "total_steps": 4, "fraction": 0.5, "eta_s": None}),
            sse("succeeded", finished(api)),
        ),
    )

    async def scenario() -> tuple[str, list[Path], list[int]]:
        async with api.async_client(api_key="k") as client:
            job = await client.generate("a fox", seed=42, wait=5, idempotency_key="i")
            await job.wait()
            paths = await job.save(tmp_path / "fox.png")
            images = await job.images()
            return job.status, paths, [image.width for image in images]

    status, paths, widths = asyncio.run(scenario())
    assert status == "succeeded" and paths == [tmp_path / "fox.png"] and widths == [8]
    headers = api.requests[0].headers
    assert (headers["prefer"], headers["idempotency-key"], headers["authorization"]) == (
        "wait=5",
        "i",
        "Bearer k",
    )
    assert json.loads(api.requests[0].content) == {
        "type": "txt2img",
        "prompt": "a fox",
        "seed": 42,
        "n": 1,
    }


def test_async_inpaint_and_outpaint_send_multipart(api: FakeAPI) -> None:
    api.route("POST", "/v1/jobs", accepted())

    async def scenario() -> None:
        async with api.async_client() as client:
            await client.inpaint("door", png(solid("red")), png(solid("red")), strength=0.5)
            await client.outpaint("beach", png(solid("red")), bottom=16)

    asyncio.run(scenario())
    inpaint, outpaint = (multipart(r) for r in api.requests)
    assert set(inpaint) == {"params", "image", "mask"}
    assert json.loads(inpaint["params"][2])["strength"] == 0.5
    assert json.loads(outpaint["params"][2])["outpaint"]["bottom"] == 16


def test_async_wait_polls_without_event_stream(api: FakeAPI) -> None:
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        [
            httpx.Response(200, json=job_json("running")),
            httpx.Response(
                200, json=job_json("failed", error={"code": "worker_lost", "message": "gone"})
            ),
        ],
    )

    async def scenario() -> JobFailed:
        async with api.async_client() as client:
            job = await client.get(JOB_ID)
            with pytest.raises(JobFailed) as caught:
                await job.wait()
            return caught.value

    error = asyncio.run(scenario())
    assert error.code == "worker_lost"


def test_async_events_errors_and_cancel(api: FakeAPI) -> None:
    whole = sse("progress", {"step": 1}) + sse("canceled", job_json("canceled"))
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(whole[:5], whole[5:30], whole[30:]))
    api.route(
        "DELETE",
        f"/v1/jobs/{JOB_ID}",
        envelope(409, "job_not_cancelable", "job has already ended"),
    )
    api.route("GET", "/v1/models", httpx.Response(200, json={"data": [{"id": "tiny"}]}))

    async def scenario() -> tuple[list[str], Conflict, list[dict[str, Any]]]:
        async with api.async_client() as client:
            names = [event.name async for event in client.events(JOB_ID)]
            with pytest.raises(Conflict) as caught:
                await client.cancel(JOB_ID)
            return names, caught.value, await client.models()

    names, conflict, models = asyncio.run(scenario())
    assert names == ["progress", "canceled"]
    assert conflict.code == "job_not_cancelable"
    assert models == [{"id": "tiny"}]


def test_async_connection_errors_are_wrapped() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def scenario() -> None:
        async with AsyncClient(BASE, transport=httpx.MockTransport(refuse)) as client:
            await client.get(JOB_ID)

    with pytest.raises(LatentqConnectionError):
        asyncio.run(scenario())


def test_async_wait_times_out(api: FakeAPI) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("queued")))

    async def scenario() -> None:
        async with api.async_client() as client:
            await (await client.get(JOB_ID)).wait(timeout=0.05)

    with pytest.raises(WaitTimeout):
        asyncio.run(scenario())
