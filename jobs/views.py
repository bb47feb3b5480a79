"""The Job object of API.md, rendered from a record (by the API, and for webhooks)."""

from __future__ import annotations

from typing import Any

from jobs.protocol import JobStatus
from jobs.records import JobRecord
from jobs.storage import Storage


def job_view(
    record: JobRecord,
    storage: Storage,
    *,
    base_url: str,
    url_ttl_s: int,
    queue_position: int | None = None,
) -> dict[str, Any]:
    """The public Job: image URLs signed afresh for `url_ttl_s`, behind `base_url`."""
    base = base_url.rstrip("/")
    result = None
    if record.status is JobStatus.SUCCEEDED and record.images is not None:
        if record.type.makes_video:
            result = {
                "videos": [
                    {
                        "url": storage.url(video.key, url_ttl_s, base),
                        "width": video.width,
                        "height": video.height,
                        "num_frames": video.num_frames,
                        "fps": video.fps,
                        "seed": video.seed,
                        "content_type": video.content_type,
                        "webp_url": storage.url(video.webp_key, url_ttl_s, base)
                        if video.webp_key
                        else None,
                    }
                    for video in record.images
                ]
            }
        else:
            result = {
                "images": [
                    {
                        "url": storage.url(image.key, url_ttl_s, base),
                        "width": image.width,
                        "height": image.height,
                        "seed": image.seed,
                        "content_type": image.content_type,
                    }
                    for image in record.images
                ]
            }
    progress = record.progress
    return {
        "id": record.id,
        "type": record.type.value,
        "model": record.model,
        "status": record.status.value,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "queue_position": queue_position if record.status is JobStatus.QUEUED else None,
        "progress": {
            "step": progress.step,
            "total_steps": progress.total_steps,
            "fraction": progress.fraction,
            "eta_s": progress.eta_s if record.status is JobStatus.RUNNING else None,
        },
        "params": record.params,
        "result": result,
        "error": record.error.model_dump() if record.error else None,
        "timings": record.timings,
        "worker": record.worker,
        "attempts": record.attempts,
    }


def progress_view(message: dict[str, Any]) -> dict[str, Any]:
    """The `progress` SSE event's data from a progress message."""
    return {k: message.get(k) for k in ("step", "total_steps", "fraction", "eta_s")}
