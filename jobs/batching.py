"""Micro-batching: which queued jobs can share one pipeline call, and taking them.

A worker that takes a txt2img job looks a little way down its model's queues for other
queued jobs that a single pipeline call can run together with it: same task, size, steps,
scheduler, guidance and adapters (prompts may differ; each image keeps its own seed, so a
job's images do not depend on the company it ran in). It claims each one exactly like a
dequeue would: the job moves to `running` under this worker's lease (the same atomic
transition any run starts with), then leaves its queue. A worker that dies after that
leaves jobs with expiring leases, which the reapers give back to their queues.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from typing import Any, cast

from jobs import defaults, keys
from jobs.protocol import JobStatus, JobType, Priority, Txt2ImgParams, is_job_id
from jobs.queueing import JobQueues
from jobs.records import JobRecord, JobStore

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

    def __init__(self, queues: JobQueues, store: JobStore, worker: str) -> None:
        self.queues = queues
        self.store = store
        self.worker = worker

    def candidates(self, model_id: str, window: int) -> list[tuple[Priority, str]]:
        """The first `window` entries of each of the model's queues, most urgent first."""
        with self.store.redis.pipeline(transaction=False) as pipe:
            for priority in Priority:
                pipe.lrange(self.queues.queue(model_id, priority).key, 0, window - 1)
            listed = cast(list[list[bytes]], pipe.execute())
        return [
            (priority, rq_id.decode())
            for priority, ids in zip(Priority, listed, strict=True)
            for rq_id in ids
        ]

    def peek(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """Records of several jobs in one round trip."""
        ids = list(job_ids)
        with self.store.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            raws = cast(list[dict[bytes, bytes]], pipe.execute())
        return [self.store.parse(raw) for raw in raws]

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
        records = self.peek(job_id_of(rq_id) for _, rq_id in found)
        taken: list[JobRecord] = []
        for (priority, rq_id), record in zip(found, records, strict=True):
            if record is None or record.id == lead.id or record.status is not JobStatus.QUEUED:
                continue
            if record.type is not JobType.TXT2IMG or record.model != lead.model:
                continue
            try:
                params = record.typed_params()
            except ValueError:
                continue  # its own run will fail it with the reason
            if params.n > room or key_of(params) != wanted:
                continue
            claimed = self.claim(record, priority, rq_id)
            if claimed is not None:
                taken.append(claimed)
                room -= params.n
                if room <= 0:
                    break
        return taken

    def claim(self, record: JobRecord, priority: Priority, rq_id: str) -> JobRecord | None:
        """Start a queued job here, as a worker dequeuing it would; None when someone else
        (a worker, a cancel) got to it first."""
        moved = self.store.transition(
            record.id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker=self.worker
        )
        if moved is None:
            return None
        # Off the queue, so no worker dequeues it only to skip it; RQ's copy expires.
        self.queues.forget(rq_id, record.model, priority)
        return self.store.get(record.id)


def describe(records: list[JobRecord]) -> str:
    """For logs: the jobs of a batch and their images."""
    return json.dumps({r.id: int(r.params.get("n", 1)) for r in records})
