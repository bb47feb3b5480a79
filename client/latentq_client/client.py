"""`Client` and `AsyncClient`: the HTTP API of latentq as Python calls."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping
from contextlib import aclosing, closing
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, Unpack, get_type_hints
from urllib.parse import quote

import httpx

from latentq_client._requests import ImageInput, build_submit
from latentq_client._version import __version__
from latentq_client._wait import Waiter
from latentq_client.errors import LatentqConnectionError, LatentqError, error_from_response
from latentq_client.job import AsyncJob, BaseJob, Job
from latentq_client.options import (
    GENERATE,
    IMG2IMG,
    INPAINT,
    JOB_KINDS,
    OUTPAINT,
    VIDEO,
    GenerateOptions,
    Img2ImgOptions,
    InpaintOptions,
    JobKind,
    OutpaintOptions,
    VideoOptions,
)
from latentq_client.progress import ProgressCallback
from latentq_client.sse import Event, SSEDecoder

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

R = TypeVar("R")
"""What a client's job methods return: a `Job`, or a coroutine of an `AsyncJob`."""

Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)
"""The kind of httpx transport a client takes: blocking or async."""


class _Base(Generic[R, Transport]):
    """What both clients share: their settings, every request they send, and the methods that
    give a job. Those hand their request to the client's `_job`, which gives a `Job`
    (`Client`) or a coroutine of an `AsyncJob` to await (`AsyncClient`); each client only
    sends requests and reads streams its way."""

    _http: httpx.Client | httpx.AsyncClient

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        *,
        headers: Mapping[str, str] | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("LATENTQ_API_KEY")
        self.timeout = (
            timeout
            if isinstance(timeout, httpx.Timeout) or timeout is None
            else httpx.Timeout(timeout)
        )
        self._headers = {"User-Agent": f"latentq-client/{__version__}", **(headers or {})}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"
        origin = httpx.URL(self.base_url)
        self._origin = (origin.scheme, origin.host, origin.port)
        self._http = self._open(transport)

    def _open(self, transport: Transport | None) -> httpx.Client | httpx.AsyncClient:
        """The httpx client that sends this client's requests."""
        raise NotImplementedError

    def _job(self, request: httpx.Request) -> R:
        """Send `request` and make a job of the answer: the one thing each client does its way."""
        raise NotImplementedError

    def generate(self, prompt: str, **options: Unpack[GenerateOptions]) -> R:
        """Submit a text-to-image job. `wait=N` asks the server to hold the answer up to N s.

        `loras` applies adapters of the catalogue to this job: `{"pixel-art": 0.8}`,
        `["pixel-art"]` (scale 1), `[("pixel-art", 0.8)]` or `[{"id": ..., "scale": ...}]`;
        the other job types take it too.
        """
        return self._submit(GENERATE, prompt, options)

    def img2img(self, prompt: str, image: ImageInput, **options: Unpack[Img2ImgOptions]) -> R:
        """Submit an image-to-image job: restyle `image`, `strength` of the way (0–1)."""
        return self._submit(IMG2IMG, prompt, options, image)

    def inpaint(
        self, prompt: str, image: ImageInput, mask: ImageInput, **options: Unpack[InpaintOptions]
    ) -> R:
        """Submit an inpainting job: white in `mask` is repainted, black kept."""
        return self._submit(INPAINT, prompt, options, image, mask)

    def outpaint(self, prompt: str, image: ImageInput, **options: Unpack[OutpaintOptions]) -> R:
        """Submit an outpainting job that grows the canvas by the given pixels on each side."""
        return self._submit(OUTPAINT, prompt, options, image)

    def video(self, prompt: str, **options: Unpack[VideoOptions]) -> R:
        """Submit a text-to-video job; each of the `n` clips is an MP4 with an animated WebP.

        `num_frames` and `fps` default to the model's (see `models()`).
        """
        return self._submit(VIDEO, prompt, options)

    def get(self, job_id: str) -> R:
        return self._job(self._http.build_request("GET", _job_path(job_id)))

    def cancel(self, job_id: str) -> R:
        """Cancel a job; raises `Conflict` (code `job_not_cancelable`) once it has ended."""
        return self._job(self._http.build_request("DELETE", _job_path(job_id)))

    def _submit(
        self, kind: JobKind, prompt: str, options: Mapping[str, Any], *images: ImageInput
    ) -> R:
        submit = build_submit(kind, prompt, options, images)
        timeout = self.timeout
        if submit.wait is not None and timeout is not None and timeout.read is not None:
            # The server holds a `Prefer: wait` request open for up to that long.
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=timeout.read + submit.wait,
                write=timeout.write,
                pool=timeout.pool,
            )
        return self._job(
            self._http.build_request("POST", "/v1/jobs", timeout=timeout, **submit.httpx_kwargs())
        )

    def _models_request(self) -> httpx.Request:
        return self._http.build_request("GET", "/v1/models")

    def _events_request(self, job_id: str, read_timeout: float | None) -> httpx.Request:
        connect = self.timeout.connect if self.timeout is not None else None
        return self._http.build_request(
            "GET",
            _job_path(job_id) + "/events",
            headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
            timeout=httpx.Timeout(connect=connect, read=read_timeout, write=connect, pool=connect),
        )

    def _fetch_request(self, url: str) -> httpx.Request:
        request = self._http.build_request("GET", url)
        target = httpx.URL(url)
        if not target.is_relative_url and (target.scheme, target.host, target.port) != self._origin:
            # Signed URLs of other hosts (object storage) must not get our API key.
            request.headers.pop("Authorization", None)
        return request


def _spell_out(method: Callable[..., Any], kind: JobKind) -> None:
    """Give `method` a signature that names each option of `kind` with its default."""
    # Type checkers and IDEs read the keywords from `Unpack[...]`; help(), inspect and
    # notebooks read `__signature__`.
    signature = inspect.signature(method)
    types = get_type_hints(kind.options)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params += [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=option.default, annotation=types[name]
        )
        for name, option in kind.specs.items()
    ]
    method.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]


for _kind in JOB_KINDS:
    _spell_out(getattr(_Base, _kind.name), _kind)


def _job_path(job_id: str) -> str:
    return "/v1/jobs/" + quote(job_id, safe="")


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def _connection_error(exc: httpx.TransportError, url: httpx.URL) -> LatentqConnectionError:
    kind = type(exc).__name__
    return LatentqConnectionError(f"{kind} talking to {url}: {exc}".rstrip(": "))


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise LatentqError(
            response.status_code,
            "invalid_response",
            f"expected a JSON object from {response.request.url}, got {response.text[:200]!r}",
            response=response,
        )
    return body


def _model_list(response: httpx.Response) -> list[dict[str, Any]]:
    data = _json_object(response).get("data")
    return [dict(m) for m in data if isinstance(m, dict)] if isinstance(data, list) else []


class Client(_Base[Job, httpx.BaseTransport]):
    """A synchronous client. `api_key` defaults to the environment's `LATENTQ_API_KEY`."""

    _http: httpx.Client

    def _open(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=self.timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
            if stream and response.status_code >= 400:
                response.read()
        except httpx.TransportError as exc:
            raise _connection_error(exc, request.url) from exc
        return _check(response)

    def _job(self, request: httpx.Request) -> Job:
        return Job(_json_object(self._send(request)), self)

    def models(self) -> list[dict[str, Any]]:
        return _model_list(self._send(self._models_request()))

    def events(
        self, job_id: str, *, read_timeout: float | None = None
    ) -> Generator[Event, None, None]:
        """The job's events as they come, until the final one (or the stream closes)."""
        request = self._events_request(job_id, read_timeout)
        response = self._send(request, stream=True)
        try:
            decoder = SSEDecoder()
            for chunk in response.iter_bytes():
                yield from decoder.feed(chunk)
        except httpx.TransportError as exc:
            raise _connection_error(exc, request.url) from exc
        finally:
            response.close()

    def _wait(
        self, job: BaseJob, timeout: float | None, progress: bool | ProgressCallback | None
    ) -> dict[str, Any]:
        waiter = Waiter(job.raw, timeout, progress)
        try:
            while True:
                if waiter.use_stream and self._follow(job.id, waiter):
                    return waiter.job
                try:
                    if waiter.on_job(self.get(job.id).raw):
                        return waiter.job
                except LatentqError as exc:
                    waiter.poll_error(exc)
                time.sleep(waiter.pause(job))
        finally:
            waiter.close()

    def _follow(self, job_id: str, waiter: Waiter) -> bool:
        """Follow the events stream; True once it delivered the finished job."""
        events = self.events(job_id, read_timeout=waiter.stream_read_timeout())
        with waiter.following(), closing(events):
            for event in events:
                if waiter.on_event(event):
                    return True
        return False

    def _fetch(self, url: str) -> bytes:
        return self._send(self._fetch_request(url)).content


class AsyncClient(_Base[Coroutine[Any, Any, AsyncJob], httpx.AsyncBaseTransport]):
    """The asynchronous twin of `Client`: the same methods, as coroutines."""

    _http: httpx.AsyncClient

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self.timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=stream)
            if stream and response.status_code >= 400:
                await response.aread()
        except httpx.TransportError as exc:
            raise _connection_error(exc, request.url) from exc
        return _check(response)

    async def _job(self, request: httpx.Request) -> AsyncJob:
        return AsyncJob(_json_object(await self._send(request)), self)

    async def models(self) -> list[dict[str, Any]]:
        return _model_list(await self._send(self._models_request()))

    async def events(
        self, job_id: str, *, read_timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """As `Client.events`, as an async iterator."""
        request = self._events_request(job_id, read_timeout)
        response = await self._send(request, stream=True)
        try:
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    yield event
        except httpx.TransportError as exc:
            raise _connection_error(exc, request.url) from exc
        finally:
            await response.aclose()

    async def _wait(
        self, job: BaseJob, timeout: float | None, progress: bool | ProgressCallback | None
    ) -> dict[str, Any]:
        waiter = Waiter(job.raw, timeout, progress)
        try:
            while True:
                if waiter.use_stream and await self._follow(job.id, waiter):
                    return waiter.job
                try:
                    if waiter.on_job((await self.get(job.id)).raw):
                        return waiter.job
                except LatentqError as exc:
                    waiter.poll_error(exc)
                await asyncio.sleep(waiter.pause(job))
        finally:
            waiter.close()

    async def _follow(self, job_id: str, waiter: Waiter) -> bool:
        events = self.events(job_id, read_timeout=waiter.stream_read_timeout())
        # An async generator left early is closed here, not whenever it is collected.
        with waiter.following():
            async with aclosing(events):
                async for event in events:
                    if waiter.on_event(event):
                        return True
        return False

    async def _fetch(self, url: str) -> bytes:
        return (await self._send(self._fetch_request(url))).content
