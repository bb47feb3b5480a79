"""Micro-batching: which queued jobs can share one pipeline call, and taking them.

A worker that takes a txt2img job looks a little way down its model's queues for other
queued jobs that a single pipeline call can run together with it: same task, size, steps,
scheduler, guidance and adapters (prompts may differ; each image keeps its own seed, so a
job's images do not depend on the company it ran in). It claims each one exactly like a
dequeue would: in one step (`Lifecycle.start`), the job moves to `running` under this
worker's lease and leaves its queue. A worker that dies after that leaves jobs with expiring
leases, which the reapers give back to their queues.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any, cast

from jobs import defaults
from jobs.lifecycle import Lifecycle
from jobs.protocol import JobStatus, Priority, Txt2ImgParams, is_job_id
from jobs.records import JobRecord

JOB_ID_LENGTH = len(defaults.JOB_ID_PREFIX) + 22

SCAN_FACTOR = 4
"""How far down each queue a worker looks for companions: this many times the batch size."""


def batch_key(params: Any) -> tuple[Hashable, ...] | None:
    """What must be equal for two jobs to share a pipeline call, or None when a job of this
    kind never shares one (only txt2img does, for now)."""
    if not isinstance(params, Txt2ImgParams):
        return None
    loras = getattr(params, "loras", None) or ()
    return (
        params.model,
        params.width,
        params.height,
        params.steps,
        params.scheduler,
        params.guidance_scale,
        tuple((lora.id, lora.scale) for lora in loras),
    )


def job_id_of(rq_id: str) -> str:
    """The job an RQ job id carries: the job id itself, or `<job id>-r<hex>` for a re-run."""
    # Job ids have a fixed length and may themselves contain "-r".
    head, tail = rq_id[:JOB_ID_LENGTH], rq_id[JOB_ID_LENGTH:]
    return head if tail.startswith("-r") and is_job_id(head) else rq_id


class Batcher:
    """Finds and claims companions for a job this worker has just started."""

    def __init__(self, lifecycle: Lifecycle, worker: str) -> None:
        self.lifecycle = lifecycle
        self.queues = lifecycle.queues
        self.worker = worker

    def candidates(self, model_id: str, window: int) -> list[tuple[Priority, str]]:
        """The first `window` entries of each of the model's queues, most urgent first."""
        with self.queues.redis.pipeline(transaction=False) as pipe:
            for priority in Priority:
                pipe.lrange(self.queues.queue(model_id, priority).key, 0, window - 1)
            listed = cast(list[list[bytes]], pipe.execute())
        return [
            (priority, rq_id.decode())
            for priority, ids in zip(Priority, listed, strict=True)
            for rq_id in ids
        ]

    def take(
        self, lead: JobRecord, wanted: Hashable, room: int, key_of: Any = batch_key
    ) -> list[JobRecord]:
        """Claim queued jobs that can run in one call with `lead` (already running here):
        those whose `key_of(params)` is `wanted` (the lead's), up to `room` more images;
        returns them, moved to running under this worker."""
        if wanted is None or room <= 0:
            return []
        found = self.candidates(lead.model, room * SCAN_FACTOR)
        if not found:
            return []
        records = self.queues.store.get_many([job_id_of(rq_id) for _, rq_id in found])
        taken: list[JobRecord] = []
        for record in records:
            if record is None or record.id == lead.id or record.status is not JobStatus.QUEUED:
                continue
            params = record.params
            # Unreadable params never batch: the job's own run fails it with the reason.
            if not isinstance(params, Txt2ImgParams) or record.model != lead.model:
                continue
            if params.n > room or key_of(params) != wanted:
                continue
            # Off its queue in the same step, so no worker dequeues it only to skip it.
            claimed = self.lifecycle.start(record, self.worker, take_from_queue=True)
            if claimed is not None:
                taken.append(claimed)
                room -= params.n
                if room <= 0:
                    break
        return taken


def images(record: JobRecord) -> int:
    """The images (or videos) a job makes."""
    return record.params.n


def describe(records: list[JobRecord]) -> str:
    """For logs: the jobs of a batch and their images."""
    return json.dumps({r.id: images(r) for r in records})
