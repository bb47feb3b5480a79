"""The reaper on a real Redis: lost leases are re-run once, then failed as worker_lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from jobs import keys
from jobs.protocol import JobStatus, JobType, new_job_id, utcnow
from jobs.queueing import JobQueues
from jobs.records import JobRecord, JobStore, Progress
from jobs.recovery import LOST, REQUEUED, Reaper
from tests.integration.services import RedisServer

DB = 5


@pytest.fixture
def queues(redis_server: RedisServer) -> Iterator[JobQueues]:
    connection = redis.Redis(port=redis_server.port, db=DB)
    connection.flushdb()
    store = JobStore(connection, ttl_s=600, lease_s=0.5)
    yield JobQueues(connection, store, queue_max=100, job_timeout_s=60)
    connection.flushdb()


def running_job(queues: JobQueues, worker: str = "w1") -> str:
    record = JobRecord(
        id=new_job_id(),
        type=JobType.TXT2IMG,
        model="tiny",
        status=JobStatus.QUEUED,
        created_at=utcnow(),
        progress=Progress(step=0, total_steps=4),
        params={"type": "txt2img", "prompt": "p", "priority": "normal"},
    )
    queues.submit(record, record.typed_params().priority)
    queues.queue("tiny", "normal").pop_job_id()  # as a worker's dequeue does
    assert queues.store.transition(
        record.id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker=worker
    )
    return record.id


def test_a_live_lease_is_left_alone(queues: JobQueues) -> None:
    job_id = running_job(queues)
    reaper = Reaper(queues, poison_limit=2)
    assert reaper.reap_once() == {}
    assert queues.store.heartbeat(job_id, "w1")
    assert not queues.store.heartbeat(job_id, "w2")  # only the holder renews
    assert reaper.reap_once() == {}


def test_a_lost_job_is_requeued_at_the_front_then_failed(queues: JobQueues) -> None:
    other = running_job(queues)
    queues.store.heartbeat(other, "w1")
    job_id = running_job(queues)
    waiting = new_job_id()
    record = JobRecord(
        id=waiting,
        type=JobType.TXT2IMG,
        model="tiny",
        status=JobStatus.QUEUED,
        created_at=utcnow(),
        params={"type": "txt2img", "prompt": "p"},
    )
    queues.submit(record, record.typed_params().priority)
    queues.redis.delete(keys.lease(job_id), keys.lease(other))  # as if the worker died
    queues.store.heartbeat(other, "w1")  # this one's worker is alive after all
    failed: list[str] = []
    reaper = Reaper(queues, poison_limit=2, on_failed=failed.append)

    assert reaper.reap_once() == {job_id: REQUEUED}
    again = queues.store.get(job_id)
    assert again is not None and again.status is JobStatus.QUEUED and again.attempts == 1
    assert again.started_at is None and again.worker is None and again.progress.step == 0
    queued = [i.decode() for i in queues.redis.lrange(queues.queue("tiny", "normal").key, 0, -1)]
    assert again.rq_id is not None and again.rq_id.startswith(job_id + "-r")
    assert queued == [again.rq_id, waiting]  # ahead of the jobs that were waiting
    assert queues.position(again, again.typed_params().priority) == 1
    # The old worker, back from the dead, may not finish it.
    assert not queues.store.heartbeat(job_id, "w1")
    assert (
        queues.store.transition(
            job_id, JobStatus.SUCCEEDED, allowed_from=(JobStatus.RUNNING,), holder="w1"
        )
        is None
    )

    queues.queue("tiny", "normal").pop_job_id()
    queues.store.transition(
        job_id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker="w2"
    )
    queues.redis.delete(keys.lease(job_id))
    assert reaper.reap_once() == {job_id: LOST}
    lost = queues.store.get(job_id)
    assert lost is not None and lost.status is JobStatus.FAILED and lost.finished_at
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert failed == [job_id]
    assert queues.redis.sismember(keys.RUNNING, job_id) == 0


def test_concurrent_reapers_requeue_once(queues: JobQueues) -> None:
    job_ids = [running_job(queues) for _ in range(20)]
    for job_id in job_ids:
        queues.redis.delete(keys.lease(job_id))
    reapers = [Reaper(queues, poison_limit=3) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: r.reap_once(), reapers))
    outcomes = [o for result in results for o in result.items()]
    assert sorted(job_id for job_id, _ in outcomes) == sorted(job_ids)
    queue_key = queues.queue("tiny", "normal").key
    assert queues.redis.llen(queue_key) == 20
    for job_id in job_ids:
        raw = queues.redis.hget(keys.job(job_id), "attempts")
        assert raw is not None and json.loads(raw) == 1


def test_leases_expire_by_themselves(queues: JobQueues) -> None:
    import time

    job_id = running_job(queues)
    assert queues.redis.exists(keys.lease(job_id))
    time.sleep(0.7)
    assert not queues.redis.exists(keys.lease(job_id))
    assert Reaper(queues, poison_limit=2).reap_once() == {job_id: REQUEUED}
