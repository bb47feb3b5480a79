"""Logging: JSON lines (or plain text), one line per job transition, request ids throughout.

Every process calls `configure()` once. A job's lines carry `job_id`, `model`, `type`,
`status` and, once known, `timings`; lines written while serving a request carry its
`request_id` (taken from `X-Request-ID` or made up by the API, and kept on the job so the
worker's lines about it carry it too).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_FIELDS = (
    "job_id",
    "model",
    "type",
    "status",
    "move",
    "previous",
    "worker",
    "timings",
    "error",
    "attempts",
    "request_id",
)

log = logging.getLogger("latentq.jobs")

_PASSWORD_PARAM = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A connection URL fit for a log line: its password (`user:password@`, or a
    `password=` query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{host}"
    query = _PASSWORD_PARAM.sub(r"\1\2***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def transition(
    job_id: str, model: str, job_type: str, status: str, level: int = logging.INFO, **extra: Any
) -> None:
    """The one line a job's move (`jobs.lifecycle`), or the end of a run, writes."""
    fields = {"job_id": job_id, "model": model, "type": job_type, "status": status, **extra}
    extra = {k: v for k, v in fields.items() if v is not None}
    log.log(level, "job %s %s", job_id, status, extra=extra)
