"""Finding jobs whose worker died, and running them again.

A running job's worker renews the job's lease (`keys.lease`) at every step. When a lease
runs out — the worker was killed, its machine lost, its process hung — any reaper (every
worker and every API replica runs one; they are safe together) puts the job back at the
front of its queue, up to the poison limit: a job that loses workers that often fails with
`worker_lost` instead of taking down one worker after another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import cast

import redis

from jobs import events, keys, logs
from jobs.errors import FailureCode
from jobs.protocol import JobStatus, Priority, utcnow
from jobs.queueing import JobQueues
from jobs.records import JobError, Progress

log = logging.getLogger(__name__)

REQUEUED = "requeued"
LOST = "failed"


class Reaper:
    def __init__(
        self, queues: JobQueues, poison_limit: int, on_failed: Callable[[str], None] | None = None
    ) -> None:
        self.queues = queues
        self.redis = queues.redis
        self.poison_limit = poison_limit
        self.on_failed = on_failed
        """Called with the id of a job this reaper failed (to send its webhook)."""

    def reap_once(self) -> dict[str, str]:
        """Check every running job's lease once; returns what was done, by job id."""
        done = {}
        running = cast(set[bytes], self.redis.smembers(keys.RUNNING))
        for raw_id in running:
            job_id = raw_id.decode()
            if self.redis.exists(keys.lease(job_id)):
                continue
            outcome = self._reap(job_id)
            if outcome is not None:
                done[job_id] = outcome
        return done

    def _reap(self, job_id: str) -> str | None:
        record_key, lease_key = keys.job(job_id), keys.lease(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                # Optimistic: if the lease comes back or the record changes before EXEC (the
                # worker was only slow, or another reaper won), nothing is written.
                pipe.watch(record_key, lease_key)  # type: ignore[no-untyped-call]
                if pipe.exists(lease_key):
                    return None
                status, attempts, model, params, progress, timeout_s, job_type = (
                    json.loads(v) if v is not None else None
                    for v in pipe.hmget(
                        record_key,
                        "status",
                        "attempts",
                        "model",
                        "params",
                        "progress",
                        "timeout_s",
                        "type",
                    )
                )
                if status != JobStatus.RUNNING.value:
                    pipe.multi()
                    pipe.srem(keys.RUNNING, job_id)
                    pipe.execute()
                    return None
                attempts = int(attempts or 0) + 1
                total = Progress.model_validate(progress or {}).total_steps
                pipe.multi()
                pipe.srem(keys.RUNNING, job_id)
                if attempts >= self.poison_limit:
                    error = JobError(
                        code=FailureCode.WORKER_LOST.value,
                        message=f"the worker running this job was lost {attempts} times; the "
                        "job is not tried again",
                    )
                    pipe.hset(
                        record_key,
                        mapping={
                            "status": json.dumps(JobStatus.FAILED.value),
                            "finished_at": json.dumps(utcnow()),
                            "attempts": json.dumps(attempts),
                            "error": error.model_dump_json(),
                        },
                    )
                    pipe.publish(
                        events.channel(job_id), events.status_message(JobStatus.FAILED.value)
                    )
                    outcome = LOST
                else:
                    pipe.hset(
                        record_key,
                        mapping={
                            "status": json.dumps(JobStatus.QUEUED.value),
                            "started_at": "null",
                            "worker": "null",
                            "attempts": json.dumps(attempts),
                            "progress": Progress(step=0, total_steps=total).model_dump_json(),
                        },
                    )
                    pipe.publish(
                        events.channel(job_id), events.status_message(JobStatus.QUEUED.value)
                    )
                    priority = Priority((params or {}).get("priority", Priority.NORMAL))
                    self.queues.requeue(job_id, str(model), priority, pipe, timeout_s)
                    outcome = REQUEUED
                pipe.execute()
            except redis.WatchError:
                return None
        log.warning("job %s lost its worker (loss %d): %s", job_id, attempts, outcome)
        logs.transition(
            job_id,
            str(model),
            str(job_type),
            "failed" if outcome == LOST else "queued",
            previous="worker_lost",
            attempts=attempts,
        )
        if outcome == LOST and self.on_failed is not None:
            self.on_failed(job_id)
        return outcome
