"""Finding jobs that lost their worker, and running them again.

Every worker and every API replica runs a reaper; they are safe together, since each move is
made by `jobs.lifecycle` only if what the reaper saw still holds. A reaper looks for:

- running jobs whose lease ran out — the worker was killed, its machine lost, its process
  hung: they go back to the front of their queue, up to the poison limit, past which they
  fail with `worker_lost` instead of taking down one worker after another;
- queued jobs on no queue — a worker took the job off its queue and died before it could
  start it: once the job has been seen adrift for `adrift_after_s`, it goes back to the front
  of its queue. (The wait covers the instant between a worker's pop and its start.)
"""

from __future__ import annotations

import time
from typing import cast

from jobs import keys
from jobs.lifecycle import REQUEUED, Lifecycle
from jobs.protocol import JobStatus
from jobs.records import JobRecord

ADRIFT_SCAN = 500
"""Most queued jobs one reap checks for being on their queue."""


class Reaper:
    def __init__(self, lifecycle: Lifecycle, poison_limit: int, adrift_after_s: float) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.redis = lifecycle.redis
        self.poison_limit = poison_limit
        self.adrift_after_s = adrift_after_s
        self._adrift: dict[str, tuple[str | None, float]] = {}
        """Jobs this reaper saw queued on no queue: the RQ job it looked for, and when."""

    def reap_once(self) -> dict[str, str]:
        """Look once for lost jobs and put them back; what was done, by job id."""
        return {**self._lost_leases(), **self._adrift_jobs()}

    def _lost_leases(self) -> dict[str, str]:
        running = sorted(r.decode() for r in cast(set[bytes], self.redis.smembers(keys.RUNNING)))
        if not running:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in running:
                pipe.exists(keys.lease(job_id))
            leased = pipe.execute()
        done = {}
        lost = [job_id for job_id, held in zip(running, leased, strict=True) if not held]
        for job_id, record in zip(lost, self.store.get_many(lost), strict=True):
            if record is None or record.status is not JobStatus.RUNNING:
                self.lifecycle.untrack(job_id)
                continue
            outcome = self.lifecycle.recover(record, self.poison_limit)
            if outcome is not None:
                done[job_id] = outcome
        return done

    def _adrift_jobs(self) -> dict[str, str]:
        """Queued jobs not seen on their queue for `adrift_after_s` are checked; one on no
        queue is put back once this reaper has seen it so for that long."""
        now = time.time()
        raw = self.redis.zrangebyscore(
            keys.QUEUED, "-inf", now - self.adrift_after_s, start=0, num=ADRIFT_SCAN
        )
        ids = [i.decode() for i in cast(list[bytes], raw)]
        seen = {job_id: self._adrift.pop(job_id) for job_id in ids if job_id in self._adrift}
        self._adrift.clear()  # what it saw of jobs no longer due for a check is stale
        if not ids:
            return {}
        records = self.store.get_many(ids)
        queued = [r for r in records if r is not None and r.status is JobStatus.QUEUED]
        for job_id, record in zip(ids, records, strict=True):
            if record is None or record.status is not JobStatus.QUEUED:
                self.lifecycle.untrack(job_id)
        on_queue = self._on_queue(queued)
        adrift = []
        with self.redis.pipeline(transaction=False) as pipe:
            for record in queued:
                if on_queue[record.id]:
                    # Waiting as it should: not checked again for a while.
                    pipe.zadd(keys.QUEUED, {record.id: now}, xx=True)
                    continue
                first = seen.get(record.id)
                if first is None or first[0] != record.rq_id:
                    self._adrift[record.id] = (record.rq_id, now)
                elif now - first[1] < self.adrift_after_s:
                    self._adrift[record.id] = first
                else:
                    adrift.append(record)
            pipe.execute()
        return {r.id: REQUEUED for r in adrift if self.lifecycle.recover_adrift(r)}

    def _on_queue(self, records: list[JobRecord]) -> dict[str, bool]:
        with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                queue = self.lifecycle.queues.queue(record.model, record.priority)
                pipe.lpos(queue.key, record.rq_id or record.id)
            found = pipe.execute()
        return {r.id: index is not None for r, index in zip(records, found, strict=True)}
