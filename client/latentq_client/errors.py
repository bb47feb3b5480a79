"""The exceptions of the SDK: API errors by HTTP status, job outcomes, connection failures."""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from latentq_client.job import BaseJob


class LatentqError(Exception):
    """An error answered by the service, as its envelope `{"error": {code, message, param}}`."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        param: str | None = None,
        *,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.response = response

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, param={self.param!r})"
        )


class BadRequest(LatentqError):
    """400 or 422: a malformed or out-of-range request; `param` names the field."""


class AuthenticationError(LatentqError):
    """401 or 403: a missing or wrong API key, or another key's job."""


class NotFound(LatentqError):
    """404: no such job, model or file."""


class Conflict(LatentqError):
    """409: e.g. cancelling a job that has already ended."""


class PayloadTooLarge(LatentqError):
    """413: a body or image over the service's limits."""


class UnsupportedMedia(LatentqError):
    """415: bytes that are not a PNG, JPEG or WebP image."""


class RateLimited(LatentqError):
    """429: over a rate limit or the queue is full; `retry_after` is in seconds, if given."""


class ServerError(LatentqError):
    """A 5xx answer."""


class ServiceUnavailable(ServerError):
    """503: the service cannot serve now (job store down, no worker for the model)."""


class LatentqConnectionError(LatentqError, ConnectionError):
    """The service could not be reached, or the connection broke or timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "connection_error", message)


class JobError(LatentqError):
    """A job that ended without images; `job` is its final state."""

    def __init__(self, job: BaseJob, code: str, message: str) -> None:
        super().__init__(None, code, message)
        self.job = job


class JobFailed(JobError):
    """The job ended `failed`; `code` and `message` are the job's error."""


class JobCanceled(JobError):
    """The job ended `canceled`."""


class WaitTimeout(LatentqError, TimeoutError):
    """`Job.wait` ran out of time; the job goes on, `job` is its last known state."""

    def __init__(self, job: BaseJob, timeout: float) -> None:
        super().__init__(
            None,
            "wait_timeout",
            f"job {job.id} did not end within {timeout:g}s (it is {job.status})",
        )
        self.job = job


_BY_STATUS: dict[int, type[LatentqError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    422: BadRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[LatentqError]:
    """The exception class of an HTTP status; statuses the API does not name get the base."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else LatentqError


def error_from_response(response: httpx.Response) -> LatentqError:
    """The typed exception of an error answer; robust when the body is not the envelope."""
    status = response.status_code
    code, message, param = _default_code(status), "", None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = str(envelope.get("code") or code)
        message = str(envelope.get("message") or "")
        raw_param = envelope.get("param")
        param = str(raw_param) if raw_param is not None else None
    elif isinstance(envelope, str):
        message = envelope
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]  # a framework's own error, outside the envelope
    if not message:
        text = response.text.strip()
        message = text[:500] if text and body is None else ""
        message = message or f"HTTP {status} {response.reason_phrase}".strip()
    return error_class(status)(
        status,
        code,
        message,
        param,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        response=response,
    )


def _default_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        429: "rate_limited",
        503: "service_unavailable",
    }.get(status, f"http_{status}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
