"""RQ queues: what a job's RQ job holds, and where a job stands in its queue.

Each model has one queue per priority (`keys.queue`). RQ's structures are written by
`jobs.lifecycle`, in the same atomic step as the status move they go with (an enqueue, a
give back, a recovery), from the fields `rq_job` computes with RQ's own `Job`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import redis
from rq import Queue
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from rq.utils import now

from jobs import keys
from jobs.errors import QueueFull
from jobs.protocol import Priority
from jobs.records import JobRecord, JobStore

log = logging.getLogger("latentq.jobs")


class JobQueues:
    def __init__(
        self,
        connection: redis.Redis,
        store: JobStore,
        *,
        queue_max: int,
        job_timeout_s: int,
        ack_replicas: int = 0,
        ack_timeout_ms: int = 500,
    ) -> None:
        self.redis = connection
        self.store = store
        self.queue_max = queue_max
        self.job_timeout_s = job_timeout_s
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = ack_timeout_ms
        self._queues: dict[str, Queue] = {}

    def queue(self, model_id: str, priority: Priority) -> Queue:
        name = keys.queue(model_id, priority)
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.redis, serializer=JSONSerializer)
        return self._queues[name]

    def depth(self, model_id: str) -> dict[Priority, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            for priority in Priority:
                pipe.llen(self.queue(model_id, priority).key)
            lengths = pipe.execute()
        return dict(zip(Priority, lengths, strict=True))

    def check_room(self, model_id: str) -> None:
        """`QueueFull` once `queue_max` jobs wait for the model."""
        waiting = sum(self.depth(model_id).values())
        if waiting >= self.queue_max:
            raise QueueFull(
                f"{waiting} jobs are already waiting for model {model_id}; retry later",
                headers={"Retry-After": "30"},
            )

    def await_replicas(self) -> int:
        """Wait until `ack_replicas` replicas have every write made so far (at most
        `ack_timeout_ms`); how many do.

        `WAIT` covers the earlier writes of the connection it runs on, and the pool may hand
        out another one than the submit's: a write on the same connection just before it (a
        counter) comes after the submit's in the replication stream, so a replica that has it
        has the submit too.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(keys.REPLICATION_PROBE)
            pipe.wait(self.ack_replicas, self.ack_timeout_ms)
            _, acked = pipe.execute()
        if int(acked) < self.ack_replicas:
            log.warning(
                "a submit is acknowledged with %d of %d replicas holding it after %d ms",
                acked,
                self.ack_replicas,
                self.ack_timeout_ms,
            )
        return int(acked)

    def rq_job(
        self, job_id: str, model_id: str, priority: Priority, rq_id: str, timeout_s: int | None
    ) -> list[str | bytes]:
        """The hash (field, value, ...) of the RQ job that carries `job_id` on its queue, as
        RQ's own atomic enqueue (`rq.scripts.save_unique_job`) writes it from its `Job`: a
        worker's dequeue reads it like any other."""
        queue = self.queue(model_id, priority)
        job = queue.create_job(
            keys.RUN_JOB,
            args=(job_id,),
            job_id=rq_id,
            timeout=timeout_s or self.job_timeout_s,
            # The record is the job's state; RQ's own copy of the outcome is not needed.
            result_ttl=0,
            failure_ttl=self.store.ttl_s,
            status=RQStatus.QUEUED,
        )
        job.origin = queue.name
        job.enqueued_at = now()
        fields: list[str | bytes] = []
        for name, value in job.to_dict().items():
            if value is not None:
                fields += [name, value if isinstance(value, bytes | str) else str(value)]
        return fields

    def position(self, record: JobRecord) -> int | None:
        """1 for the next job a worker of this model will take; None when not waiting.
        One round trip: the lengths of the more urgent queues and the job's index in its own."""
        priority = record.priority
        urgent = list(Priority)[: list(Priority).index(priority)]
        with self.redis.pipeline(transaction=False) as pipe:
            for p in urgent:
                pipe.llen(self.queue(record.model, p).key)
            pipe.lpos(self.queue(record.model, priority).key, record.rq_id or record.id)
            *lengths, index = pipe.execute()
        if index is None:
            return None
        return sum(int(n) for n in lengths) + int(index) + 1


def live_workers(connection: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """Workers whose presence has not expired, by model id they hold warm."""
    names = sorted(n.decode() for n in cast(set[bytes], connection.smembers(keys.WORKERS)))
    if not names:
        return {}
    values = connection.mget([keys.worker(n) for n in names])
    by_model: dict[str, list[dict[str, Any]]] = {}
    stale = []
    for name, value in zip(names, values, strict=True):
        if value is None:
            stale.append(name)
            continue
        info = json.loads(value)
        for model_id in info.get("models", []):
            by_model.setdefault(model_id, []).append(info)
    if stale:
        connection.srem(keys.WORKERS, *stale)
    return by_model


def announce_worker(connection: redis.Redis, name: str, info: dict[str, Any], ttl_s: int) -> None:
    """Refresh a worker's presence; it disappears `ttl_s` after the last call."""
    payload = json.dumps({**info, "name": name, "seen_at": time.time()})
    with connection.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(name), payload, ex=ttl_s)
        pipe.sadd(keys.WORKERS, name)
        pipe.execute()


def retire_worker(connection: redis.Redis, name: str) -> None:
    with connection.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(name))
        pipe.srem(keys.WORKERS, name)
        pipe.execute()
