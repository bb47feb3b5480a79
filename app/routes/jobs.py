"""`/v1/jobs`: submit and read jobs."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.deps import JobsDep
from app.metrics import JOBS_SUBMITTED
from app.service import Submission
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
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise MalformedBody(f"{what} must be a JSON object")
    return value


@router.post("", status_code=202, openapi_extra=_SUBMIT_SCHEMA)
async def submit_job(request: Request, jobs: JobsDep) -> JSONResponse:
    """Submit a job; 202 with the Job and its Location."""
    submission = await _read_submission(request)
    record = await run_in_threadpool(jobs.submit, submission)
    JOBS_SUBMITTED.labels(record.type.value, record.model).inc()
    view = await run_in_threadpool(jobs.view, record, str(request.base_url))
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


@router.get("/{job_id}")
def get_job(job_id: str, request: Request, jobs: JobsDep) -> JSONResponse:
    """The Job, or 404."""
    return JSONResponse(jobs.view(jobs.get(job_id), str(request.base_url)))
