"""The error family of the service.

Route and service code raise these; one handler in `app` maps them onto the envelope of
`docs/api.md`: `{"error": {"code", "message", "param"}}`. Jobs that fail store a `FailureCode`.
"""

from enum import StrEnum


class FailureCode(StrEnum):
    """Why a job ended `failed`, stored on the job's `error.code`."""

    INVALID_INPUT = "invalid_input"
    OUT_OF_MEMORY = "out_of_memory"
    WORKER_LOST = "worker_lost"
    TIMEOUT = "timeout"
    INVALID_OUTPUT = "invalid_output"
    MODEL_UNAVAILABLE = "model_unavailable"
    INTERNAL = "internal"


class LatentqError(Exception):
    """Base of every error a client may see. `status` is the HTTP status it maps to."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code


class InvalidRequest(LatentqError):
    """A field is missing, malformed or out of range."""

    status = 422
    code = "invalid_request"


class MalformedBody(LatentqError):
    """The body is not the JSON object or multipart form that was announced."""

    status = 400
    code = "malformed_body"


class Unauthorized(LatentqError):
    status = 401
    code = "unauthorized"


class Forbidden(LatentqError):
    status = 403
    code = "forbidden"


class NotFound(LatentqError):
    status = 404
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class JobNotCancelable(LatentqError):
    status = 409
    code = "job_not_cancelable"


class PayloadTooLarge(LatentqError):
    status = 413
    code = "payload_too_large"


class InvalidImage(LatentqError):
    """Bytes that are not an image, or an image in a format we do not accept."""

    status = 415
    code = "invalid_image"


class QueueFull(LatentqError):
    status = 429
    code = "queue_full"


class ServiceUnavailable(LatentqError):
    """A dependency (Redis) does not answer."""

    status = 503
    code = "service_unavailable"
