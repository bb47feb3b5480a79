"""OpenAI-compatible image routes: `/v1/images/generations` and `/v1/images/edits`."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app import openai_compat
from app.auth import CallerDep
from app.deps import ScopesDep, State, StateDep
from app.fairness import unless_disconnected
from app.metrics import JOBS_SUBMITTED
from app.service import Submission
from app.waiting import wait_for_end
from jobs.errors import (
    InvalidRequest,
    LatentqError,
    MalformedBody,
    ServiceUnavailable,
)
from jobs.protocol import JobStatus

router = APIRouter(prefix="/v1/images", tags=["openai"])


class JobTimedOut(LatentqError):
    status = 504
    code = "timeout"


class JobDidNotSucceed(LatentqError):
    status = 500
    code = "job_failed"


@router.post("/generations")
async def generations(
    request: Request, state: StateDep, caller: CallerDep, scopes: ScopesDep
) -> JSONResponse:
    """OpenAI's images.generate: runs txt2img and answers when it is done."""

    async def build() -> tuple[Submission, str]:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise MalformedBody("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise MalformedBody("the request body must be a JSON object")
        return openai_compat.generation(body)

    return await _answer(request, state, caller, scopes, build)


@router.post("/edits")
async def edits(
    request: Request, state: StateDep, caller: CallerDep, scopes: ScopesDep
) -> JSONResponse:
    """OpenAI's images.edit (multipart): runs inpainting, transparent mask pixels repainted."""

    async def build() -> tuple[Submission, str]:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest("images.edit takes multipart/form-data with image and prompt")
        limit = state.settings.max_request_bytes
        try:
            form = await request.form(max_files=8, max_fields=32, max_part_size=limit)
        except LatentqError:
            raise
        except Exception as exc:  # starlette's own errors for a broken form
            raise MalformedBody(f"the multipart form could not be read: {exc}") from None
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        mask = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name in ("image", "image[]"):
                    images.append(await value.read())
                elif name == "mask":
                    mask = await value.read()
                else:
                    raise InvalidRequest(f"unexpected file part {name!r}", param=name)
            else:
                fields[name] = value
        # Decoding, resizing and encoding images: off the event loop.
        return await run_in_threadpool(
            openai_compat.edit, fields, images, mask, max_pixels=state.settings.max_image_pixels
        )

    return await _answer(request, state, caller, scopes, build)


async def _answer(
    request: Request, state: State, caller: str, scopes: frozenset[str], build: Any
) -> JSONResponse:
    try:
        if state.limiter.enabled:
            await run_in_threadpool(state.limiter.take, caller)
        async with AsyncExitStack() as held:
            if state.holds is not None:
                # The request is held until its job ends: one of the caller's open holds.
                await held.enter_async_context(state.holds.hold(caller))
            submission, response_format = await build()
            submission.caller = caller
            submission.scopes = scopes
            accepted = await run_in_threadpool(state.jobs.submit, submission)
            record = accepted.record
            JOBS_SUBMITTED.labels(record.type.value, record.model).inc()
            waited = wait_for_end(state.hub, state.jobs, record, state.settings.openai_wait_s)
            record = await unless_disconnected(request, waited) or record
        if not record.status.is_terminal():
            raise JobTimedOut(
                f"job {record.id} is still {record.status.value}; follow it at /v1/jobs/{record.id}"
            )
        if record.status is not JobStatus.SUCCEEDED:
            error = record.error
            message = error.message if error else f"the job was {record.status.value}"
            if error is not None and error.code == "invalid_input":
                raise InvalidRequest(message)
            raise JobDidNotSucceed(f"job {record.id}: {message}")
        view = await run_in_threadpool(state.jobs.view, record, str(request.base_url))
        data: list[dict[str, Any]] = []
        for stored, shown in zip(record.images or [], view["result"]["images"], strict=True):
            if response_format == "b64_json":
                raw = await run_in_threadpool(state.storage.get, stored.key)
                data.append({"b64_json": openai_compat.b64(raw), "revised_prompt": None})
            else:
                data.append({"url": shown["url"], "revised_prompt": None})
        created = int(time.time())
        return JSONResponse(
            {
                "created": created,
                "data": data,
                "output_format": getattr(record.params, "output_format", "png"),
            }
        )
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        status, body = openai_compat.openai_error(
            ServiceUnavailable("the job store (Redis) is not reachable; retry shortly")
        )
        return JSONResponse(body, status_code=status, headers={"Retry-After": "5"})
    except LatentqError as exc:
        status, body = openai_compat.openai_error(exc)
        return JSONResponse(body, status_code=status, headers=exc.headers)
