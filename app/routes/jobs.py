"""`/v1/jobs`: submit and read jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.auth import CallerDep, OperatorDep
from app.deps import JobsDep, ScopesDep, StateDep
from app.fairness import unless_disconnected
from app.metrics import JOBS_SUBMITTED
from app.responses import FastJSONResponse, loads
from app.scopes import owner_filter
from app.service import Submission
from app.waiting import follow, prefer_wait, retry_after, wait_for_change, wait_for_end
from jobs.errors import InvalidRequest, LatentqError, MalformedBody
from jobs.protocol import IMAGE_FIELDS, AnyParams

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class UnsupportedMediaType(LatentqError):
    status = 415
    code = "unsupported_media_type"


PARAMS_SCHEMA = TypeAdapter(AnyParams).json_schema(ref_template="#/components/schemas/{model}")
"""JSON schema of a submit body; its `$defs` are merged into the OpenAPI components."""

_SUBMIT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    **{k: v for k, v in PARAMS_SCHEMA.items() if k != "$defs"},
                    "description": "The job; inpaint/outpaint also take `image` (and inpaint "
                    "`mask`) as base64 or data: URLs.",
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "params": {"type": "string", "description": "the JSON body, no images"},
                        "image": {"type": "string", "format": "binary"},
                        "mask": {"type": "string", "format": "binary"},
                    },
                    "required": ["params"],
                }
            },
        },
    }
}


async def _read_submission(request: Request) -> Submission:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        body = await request.body()
        return Submission(fields=_json_object(body, "the request body"), files={})
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        limit = request.app.state.latentq.settings.max_request_bytes
        try:
            form = await request.form(
                max_files=len(IMAGE_FIELDS), max_fields=8, max_part_size=limit
            )
        except LatentqError:
            raise
        except Exception as exc:  # starlette raises its own parse errors for broken forms
            raise MalformedBody(f"the multipart form could not be read: {exc}") from None
        files: dict[str, bytes] = {}
        params_text: str | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in IMAGE_FIELDS:
                    raise InvalidRequest(f"unexpected file part {name!r}", param=name)
                files[name] = await value.read()
            elif name == "params":
                params_text = value
            elif name in IMAGE_FIELDS:
                raise InvalidRequest(f"{name} must be sent as a file part", param=name)
            else:
                raise InvalidRequest(
                    f"unexpected form field {name!r}; put the job's fields in 'params'", param=name
                )
        if params_text is None:
            raise InvalidRequest(
                "the form needs a 'params' part holding the job as JSON", param="params"
            )
        return Submission(fields=_json_object(params_text.encode(), "params"), files=files)
    raise UnsupportedMediaType(
        "send the job as application/json, or as multipart/form-data with a params part"
    )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise MalformedBody(f"{what} must be a JSON object")
    return value


@router.post("", status_code=202, openapi_extra=_SUBMIT_SCHEMA)
async def submit_job(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    scopes: ScopesDep,
    operator: OperatorDep,
) -> JSONResponse:
    """Submit a job: 202 with the Job and its Location; with `Prefer: wait=N`, 200 with the
    finished Job if it ends within N seconds (at most 60)."""
    jobs = state.jobs
    wait_s = prefer_wait(request.headers.get("prefer"))
    if state.limiter.enabled:
        await run_in_threadpool(state.limiter.take, caller)
    async with AsyncExitStack() as held:
        if wait_s and state.holds is not None:
            # Taken before the submit: a caller over its cap gets 429 and no job.
            await held.enter_async_context(state.holds.hold(caller))
        submission = await _read_submission(request)
        submission.idempotency_key = request.headers.get("idempotency-key")
        submission.caller = caller
        submission.scopes = scopes
        accepted = await run_in_threadpool(jobs.submit, submission)
        record = accepted.record
        headers = {"Location": f"/v1/jobs/{record.id}"}
        if accepted.replay:
            headers["Idempotent-Replayed"] = "true"
        else:
            JOBS_SUBMITTED.labels(record.type.value, record.model).inc()
        if wait_s is not None:
            headers["Preference-Applied"] = f"wait={wait_s}"
            if wait_s > 0:
                ended = await unless_disconnected(
                    request, wait_for_end(state.hub, jobs, record, wait_s)
                )
                record = ended or record
    view = await run_in_threadpool(jobs.view, record, str(request.base_url), operator)
    if record.status.is_terminal():
        return FastJSONResponse(view, status_code=200, headers=headers)
    headers["Retry-After"] = str(retry_after(view))
    return FastJSONResponse(view, status_code=202, headers=headers)


@router.get("/{job_id}")
async def get_job(
    job_id: str,
    request: Request,
    state: StateDep,
    jobs: JobsDep,
    caller: CallerDep,
    scopes: ScopesDep,
    operator: OperatorDep,
) -> JSONResponse:
    """The Job, or 404. A job that has not ended comes with `Retry-After` (when to poll
    again); with `Prefer: wait=N` (at most 60) the answer waits until the job's status
    changes (it starts, or ends), or N seconds."""
    record = await run_in_threadpool(jobs.get, job_id, owner_filter(caller, scopes))
    wait_s = prefer_wait(request.headers.get("prefer"))
    headers: dict[str, str] = {}
    if wait_s is not None:
        headers["Preference-Applied"] = f"wait={wait_s}"
        if wait_s > 0 and not record.status.is_terminal():
            async with AsyncExitStack() as held:
                if state.holds is not None:
                    await held.enter_async_context(state.holds.hold(caller))
                changed = await unless_disconnected(
                    request, wait_for_change(state.hub, jobs, record, wait_s)
                )
                record = changed or record
    view = await run_in_threadpool(jobs.view, record, str(request.base_url), operator)
    if not record.status.is_terminal():
        headers["Retry-After"] = str(retry_after(view))
    return FastJSONResponse(view, headers=headers)


@router.delete("/{job_id}")
def cancel_job(
    job_id: str,
    request: Request,
    jobs: JobsDep,
    caller: CallerDep,
    scopes: ScopesDep,
    operator: OperatorDep,
) -> JSONResponse:
    """Cancel: a queued job never runs, a running one stops at its next step; 409 once ended."""
    record = jobs.cancel(job_id, owner_filter(caller, scopes))
    return FastJSONResponse(jobs.view(record, str(request.base_url), operator))


def _existing_job(job_id: str, jobs: JobsDep, caller: CallerDep, scopes: ScopesDep) -> str:
    # Checked before the stream starts, so an unknown (or another key's) job is a plain 404.
    jobs.get(job_id, owner_filter(caller, scopes))
    return job_id


async def _stream_hold(state: StateDep, caller: CallerDep) -> AsyncIterator[None]:
    # One of the caller's open streams from before the first event until the stream ends,
    # however it ends (the client gone included): FastAPI closes this after the response.
    if state.holds is None:
        yield
        return
    async with state.holds.hold(caller):
        yield


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: Annotated[str, Depends(_existing_job)],
    request: Request,
    state: StateDep,
    _held: Annotated[None, Depends(_stream_hold)],
    operator: OperatorDep,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: `state` (the Job, while it has not ended), a `progress` per step,
    then one final event named after the end status with the whole Job; then it closes."""
    base_url = str(request.base_url)
    async for update in follow(state.hub, state.jobs, job_id):
        if update.progress is not None:
            yield ServerSentEvent(event="progress", data=update.progress)
            continue
        assert update.record is not None
        view = await run_in_threadpool(state.jobs.view, update.record, base_url, operator)
        if update.record.status.is_terminal():
            yield ServerSentEvent(event=update.record.status.value, data=view)
            return
        yield ServerSentEvent(event="state", data=view)
