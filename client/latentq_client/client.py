"""`Client` and `AsyncClient`: the HTTP API of latentq as Python calls."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Coroutine, Generator, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from latentq_client._requests import ImageInput, LoraInput, Submit, build_submit, padding
from latentq_client._version import __version__
from latentq_client._wait import Waiter
from latentq_client.errors import (
    LatentqConnectionError,
    LatentqError,
    WaitTimeout,
    error_from_response,
)
from latentq_client.job import AsyncJob, BaseJob, Job
from latentq_client.progress import ProgressCallback
from latentq_client.sse import Event, SSEDecoder

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

R = TypeVar("R")
"""What a client's job-type methods return: a `Job`, or a coroutine of an `AsyncJob`."""


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        headers: Mapping[str, str] | None,
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
        self._origin = httpx.URL(self.base_url)

    def _same_origin(self, url: str) -> bool:
        target = httpx.URL(url)
        if target.is_relative_url:
            return True
        return (target.scheme, target.host, target.port) == (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        )

    def _submit_timeout(self, submit: Submit) -> httpx.Timeout | None:
        # The server holds a `Prefer: wait` request open for up to that long.
        if submit.wait is None or self.timeout is None or self.timeout.read is None:
            return self.timeout
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=self.timeout.read + submit.wait,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def _stream_timeout(self, read: float | None) -> httpx.Timeout:
        connect = self.timeout.connect if self.timeout is not None else None
        return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)


def _job_path(job_id: str) -> str:
    return "/v1/jobs/" + quote(job_id, safe="")


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def _connection_error(exc: httpx.TransportError, url: str) -> LatentqConnectionError:
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


class _JobTypes(Generic[R]):
    """The job-type methods, written once for both clients: each builds its request and
    hands it to the client's `_submit`, which gives a `Job` (`Client`) or a coroutine of an
    `AsyncJob` to await (`AsyncClient`)."""

    def _submit(self, submit: Submit) -> R:
        raise NotImplementedError

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        n: int | None = 1,
        negative_prompt: str | None = None,
        output_format: str | None = None,
        priority: str | None = None,
        loras: LoraInput | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> R:
        """Submit a text-to-image job. `wait=N` asks the server to hold the answer up to N s.

        `loras` applies adapters of the catalogue to this job: `{"pixel-art": 0.8}`,
        `["pixel-art"]` (scale 1), `[("pixel-art", 0.8)]` or `[{"id": ..., "scale": ...}]`;
        the other job types take it too.
        """
        return self._submit(
            build_submit(
                "txt2img",
                prompt,
                wait=wait,
                idempotency_key=idempotency_key,
                model=model,
                width=width,
                height=height,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                seed=seed,
                n=n,
                negative_prompt=negative_prompt,
                output_format=output_format,
                priority=priority,
                loras=loras,
                **extra,
            )
        )

    def img2img(
        self,
        prompt: str,
        image: ImageInput,
        *,
        strength: float | None = None,
        model: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        n: int | None = 1,
        negative_prompt: str | None = None,
        output_format: str | None = None,
        priority: str | None = None,
        loras: LoraInput | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> R:
        """Submit an image-to-image job: restyle `image`, `strength` of the way (0–1)."""
        return self._submit(
            build_submit(
                "img2img",
                prompt,
                images={"image": image},
                wait=wait,
                idempotency_key=idempotency_key,
                strength=strength,
                model=model,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                seed=seed,
                n=n,
                negative_prompt=negative_prompt,
                output_format=output_format,
                priority=priority,
                loras=loras,
                **extra,
            )
        )

    def inpaint(
        self,
        prompt: str,
        image: ImageInput,
        mask: ImageInput,
        *,
        strength: float | None = None,
        mask_blur: int | None = None,
        model: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        n: int | None = 1,
        negative_prompt: str | None = None,
        output_format: str | None = None,
        priority: str | None = None,
        loras: LoraInput | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> R:
        """Submit an inpainting job: white in `mask` is repainted, black kept."""
        return self._submit(
            build_submit(
                "inpaint",
                prompt,
                images={"image": image, "mask": mask},
                wait=wait,
                idempotency_key=idempotency_key,
                strength=strength,
                mask_blur=mask_blur,
                model=model,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                seed=seed,
                n=n,
                negative_prompt=negative_prompt,
                output_format=output_format,
                priority=priority,
                loras=loras,
                **extra,
            )
        )

    def outpaint(
        self,
        prompt: str,
        image: ImageInput,
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        strength: float | None = None,
        mask_blur: int | None = None,
        model: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        n: int | None = 1,
        negative_prompt: str | None = None,
        output_format: str | None = None,
        priority: str | None = None,
        loras: LoraInput | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> R:
        """Submit an outpainting job that grows the canvas by the given pixels on each side."""
        return self._submit(
            build_submit(
                "outpaint",
                prompt,
                images={"image": image},
                wait=wait,
                idempotency_key=idempotency_key,
                outpaint=padding(left, right, top, bottom),
                strength=strength,
                mask_blur=mask_blur,
                model=model,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                seed=seed,
                n=n,
                negative_prompt=negative_prompt,
                output_format=output_format,
                priority=priority,
                loras=loras,
                **extra,
            )
        )

    def video(
        self,
        prompt: str,
        *,
        num_frames: int | None = None,
        fps: int | None = None,
        width: int | None = None,
        height: int | None = None,
        model: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        n: int | None = 1,
        negative_prompt: str | None = None,
        priority: str | None = None,
        loras: LoraInput | None = None,
        wait: int | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> R:
        """Submit a text-to-video job; each of the `n` clips is an MP4 with an animated WebP.

        `num_frames` and `fps` default to the model's (see `models()`).
        """
        return self._submit(
            build_submit(
                "txt2video",
                prompt,
                wait=wait,
                idempotency_key=idempotency_key,
                num_frames=num_frames,
                fps=fps,
                width=width,
                height=height,
                model=model,
                steps=steps,
                guidance_scale=guidance_scale,
                scheduler=scheduler,
                seed=seed,
                n=n,
                negative_prompt=negative_prompt,
                priority=priority,
                loras=loras,
                **extra,
            )
        )


class Client(_Base, _JobTypes[Job]):
    """A synchronous client. `api_key` defaults to the environment's `LATENTQ_API_KEY`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers)
        self._http = httpx.Client(
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

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url + url) from exc
        return _check(response)

    def _submit(self, submit: Submit) -> Job:
        response = self._request(
            "POST", "/v1/jobs", timeout=self._submit_timeout(submit), **submit.httpx_kwargs()
        )
        return Job(_json_object(response), self)

    def get(self, job_id: str) -> Job:
        return Job(_json_object(self._request("GET", _job_path(job_id))), self)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job; raises `Conflict` (code `job_not_cancelable`) once it has ended."""
        return Job(_json_object(self._request("DELETE", _job_path(job_id))), self)

    def models(self) -> list[dict[str, Any]]:
        data = _json_object(self._request("GET", "/v1/models")).get("data")
        return [dict(m) for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def events(
        self, job_id: str, *, read_timeout: float | None = None
    ) -> Generator[Event, None, None]:
        """The job's events as they come, until the final one (or the stream closes)."""
        url = _job_path(job_id) + "/events"
        try:
            with self._http.stream(
                "GET",
                url,
                headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
                timeout=self._stream_timeout(read_timeout),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                decoder = SSEDecoder()
                for chunk in response.iter_bytes():
                    yield from decoder.feed(chunk)
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url + url) from exc

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
                if waiter.expired():
                    raise _timeout(job, waiter)
                time.sleep(waiter.reconnect_delay() if waiter.use_stream else waiter.poll_delay())
        finally:
            waiter.close()

    def _follow(self, job_id: str, waiter: Waiter) -> bool:
        """Follow the events stream; True once it delivered the finished job."""
        events = self.events(job_id, read_timeout=waiter.stream_read_timeout())
        try:
            for event in events:
                if waiter.on_event(event):
                    return True
        except LatentqConnectionError as exc:
            waiter.stream_ended(timed_out=isinstance(exc.__cause__, httpx.ReadTimeout))
            return False
        except LatentqError as exc:
            waiter.stream_error(exc)
            return False
        finally:
            events.close()
        waiter.stream_ended(timed_out=False)
        return False

    def _fetch(self, url: str) -> bytes:
        request = self._http.build_request("GET", url)
        if not self._same_origin(url):
            # Signed URLs of other hosts (object storage) must not get our API key.
            request.headers.pop("Authorization", None)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise _connection_error(exc, url) from exc
        return _check(response).content


class AsyncClient(_Base, _JobTypes[Coroutine[Any, Any, AsyncJob]]):
    """The asynchronous twin of `Client`: the same methods, as coroutines."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, headers)
        self._http = httpx.AsyncClient(
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

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url + url) from exc
        return _check(response)

    async def _submit(self, submit: Submit) -> AsyncJob:
        response = await self._request(
            "POST", "/v1/jobs", timeout=self._submit_timeout(submit), **submit.httpx_kwargs()
        )
        return AsyncJob(_json_object(response), self)

    async def get(self, job_id: str) -> AsyncJob:
        return AsyncJob(_json_object(await self._request("GET", _job_path(job_id))), self)

    async def cancel(self, job_id: str) -> AsyncJob:
        """As `Client.cancel`."""
        return AsyncJob(_json_object(await self._request("DELETE", _job_path(job_id))), self)

    async def models(self) -> list[dict[str, Any]]:
        data = _json_object(await self._request("GET", "/v1/models")).get("data")
        return [dict(m) for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    async def events(
        self, job_id: str, *, read_timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """As `Client.events`, as an async iterator."""
        url = _job_path(job_id) + "/events"
        try:
            async with self._http.stream(
                "GET",
                url,
                headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
                timeout=self._stream_timeout(read_timeout),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for event in decoder.feed(chunk):
                        yield event
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url + url) from exc

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
                if waiter.expired():
                    raise _timeout(job, waiter)
                delay = waiter.reconnect_delay() if waiter.use_stream else waiter.poll_delay()
                await asyncio.sleep(delay)
        finally:
            waiter.close()

    async def _follow(self, job_id: str, waiter: Waiter) -> bool:
        events = self.events(job_id, read_timeout=waiter.stream_read_timeout())
        try:
            async for event in events:
                if waiter.on_event(event):
                    return True
        except LatentqConnectionError as exc:
            waiter.stream_ended(timed_out=isinstance(exc.__cause__, httpx.ReadTimeout))
            return False
        except LatentqError as exc:
            waiter.stream_error(exc)
            return False
        finally:
            # An async generator left early is closed here, not whenever it is collected.
            await events.aclose()
        waiter.stream_ended(timed_out=False)
        return False

    async def _fetch(self, url: str) -> bytes:
        request = self._http.build_request("GET", url)
        if not self._same_origin(url):
            request.headers.pop("Authorization", None)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise _connection_error(exc, url) from exc
        return _check(response).content


def _timeout(job: BaseJob, waiter: Waiter) -> WaitTimeout:
    job._update(waiter.job)
    return WaitTimeout(job, waiter.timeout or 0.0)
