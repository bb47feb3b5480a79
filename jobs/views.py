"""The Job object of `docs/api.md`, rendered from a record (by the API, and for webhooks)."""

from __future__ import annotations

from typing import Any

from jobs.protocol import JobStatus
from jobs.records import JobRecord, StoredImage
from jobs.storage import Storage


def job_view(
    record: JobRecord,
    storage: Storage,
    *,
    base_url: str,
    url_ttl_s: int,
    queue_position: int | None = None,
    show_worker: bool = False,
) -> dict[str, Any]:
    """The public Job: image URLs signed afresh for `url_ttl_s`, behind `base_url`. `worker`
    (a host name and PID by default) is null unless `show_worker`: for the operator only."""
    base = base_url.rstrip("/")
    result = None
    if record.status is JobStatus.SUCCEEDED and record.images is not None:
        outputs = [_output(stored, storage, url_ttl_s, base) for stored in record.images]
        result = {"videos" if record.type.makes_video else "images": outputs}
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
        "params": record.params_data(),
        "result": result,
        "error": record.error.model_dump() if record.error else None,
        "timings": record.timings,
        "worker": record.worker if show_worker else None,
        "attempts": record.attempts,
    }


def _output(stored: StoredImage, storage: Storage, ttl_s: int, base: str) -> dict[str, Any]:
    """One image of `result.images`, or one video of `result.videos` (with its frames, rate
    and animated WebP)."""
    entry: dict[str, Any] = {
        "url": storage.url(stored.key, ttl_s, base),
        "width": stored.width,
        "height": stored.height,
        "seed": stored.seed,
        "content_type": stored.content_type,
    }
    if stored.num_frames is not None:
        entry["num_frames"] = stored.num_frames
        entry["fps"] = stored.fps
        entry["webp_url"] = storage.url(stored.webp_key, ttl_s, base) if stored.webp_key else None
    return entry


def progress_view(message: dict[str, Any]) -> dict[str, Any]:
    """The `progress` SSE event's data from a progress message."""
    return {k: message.get(k) for k in ("step", "total_steps", "fraction", "eta_s")}
