"""Job records as a test writes them, without the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.protocol import JobStatus, new_job_id, utcnow
from jobs.records import JobRecord, Progress

TXT2IMG: dict[str, Any] = {"type": "txt2img", "prompt": "p"}
"""The params of the smallest job there is."""


def job_record(params: Mapping[str, Any] = TXT2IMG, **fields: Any) -> JobRecord:
    """A job of `params` just queued for model `m`, with a fresh id and 4 steps to go; any
    other field of the record given in `fields`."""
    return JobRecord.model_validate(
        {
            "id": new_job_id(),
            "type": params["type"],
            "model": "m",
            "status": JobStatus.QUEUED,
            "created_at": utcnow(),
            "progress": Progress(step=0, total_steps=4),
            "params": dict(params),
            **fields,
        }
    )
