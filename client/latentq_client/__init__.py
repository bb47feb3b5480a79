"""The Python SDK of latentq: submit image and video jobs, follow them, fetch their results."""

from latentq_client._version import __version__
from latentq_client.client import AsyncClient, Client
from latentq_client.errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    JobCanceled,
    JobError,
    JobFailed,
    LatentqConnectionError,
    LatentqError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    UnsupportedMedia,
    WaitTimeout,
)
from latentq_client.job import AsyncJob, BaseJob, Job
from latentq_client.options import (
    GenerateOptions,
    Img2ImgOptions,
    InpaintOptions,
    JobOptions,
    OutpaintOptions,
    VideoOptions,
)
from latentq_client.progress import ProgressBar, ProgressCallback, ProgressUpdate
from latentq_client.sse import Event, SSEDecoder
from latentq_client.webhooks import verify_webhook

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BadRequest",
    "BaseJob",
    "Client",
    "Conflict",
    "Event",
    "GenerateOptions",
    "Img2ImgOptions",
    "InpaintOptions",
    "Job",
    "JobCanceled",
    "JobError",
    "JobFailed",
    "JobOptions",
    "LatentqConnectionError",
    "LatentqError",
    "NotFound",
    "OutpaintOptions",
    "PayloadTooLarge",
    "ProgressBar",
    "ProgressCallback",
    "ProgressUpdate",
    "RateLimited",
    "SSEDecoder",
    "ServerError",
    "ServiceUnavailable",
    "UnsupportedMedia",
    "VideoOptions",
    "WaitTimeout",
    "__version__",
    "verify_webhook",
]
