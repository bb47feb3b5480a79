"""The reaper on a real Redis: lost leases are re-run once, then failed as worker_lost; a
queued job on no queue is put back on it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from jobs import keys
from jobs.lifecycle import LOST, REQUEUED, Lifecycle, Move
from jobs.protocol import JobStatus, Priority
from jobs.queueing import JobQueues
from jobs.records import JobRecord, JobStore
from jobs.recovery import Reaper
from jobs.storage import LocalStorage
from jobs.webhooks import Notices
from tests.integration.services import RedisServer
from tests.records import TXT2IMG, job_record

DB = 5


@pytest.fixture
def lifecycle(redis_server: RedisServer) -> Iterator[Lifecycle]:
    connection = redis.Redis(port=redis_server.port, db=DB)
    connection.flushdb()
    store = JobStore(connection, ttl_s=600, lease_s=0.5)
    yield Lifecycle(JobQueues(connection, store, queue_max=100, job_timeout_s=60))
    connection.flushdb()


def reaper(lifecycle: Lifecycle, poison_limit: int = 2, adrift_after_s: float = 60) -> Reaper:
    return Reaper(lifecycle, poison_limit, adrift_after_s)


def queued_job(lifecycle: Lifecycle, **params: object) -> JobRecord:
    record = job_record({**TXT2IMG, "priority": "normal", **params}, model="tiny")
    lifecycle.enqueue(record)
    return record


def pop(lifecycle: Lifecycle) -> str:
    """What a worker's dequeue does (BLPOP)."""
    popped = lifecycle.queues.queue("tiny", "normal").pop_job_id()  # type: ignore[arg-type]
    assert popped is not None
    return popped


def running_job(lifecycle: Lifecycle, worker: str = "w1") -> str:
    record = queued_job(lifecycle)
    pop(lifecycle)
    assert lifecycle.start(record, worker)
    return record.id


def get(lifecycle: Lifecycle, job_id: str) -> JobRecord:
    record = lifecycle.store.get(job_id)
    assert record is not None
    return record


def beat(lifecycle: Lifecycle, job_id: str, worker: str) -> bool:
    """A worker's heartbeat: True while the job is still its to run."""
    return job_id not in lifecycle.progress(worker, {}, [get(lifecycle, job_id)])


def test_a_live_lease_is_left_alone(lifecycle: Lifecycle) -> None:
    job_id = running_job(lifecycle)
    assert reaper(lifecycle).reap_once() == {}
    assert beat(lifecycle, job_id, "w1")
    assert not beat(lifecycle, job_id, "w2")  # only the holder renews
    assert reaper(lifecycle).reap_once() == {}


def test_a_lost_job_is_requeued_at_the_front_then_failed(
    lifecycle: Lifecycle, tmp_path: Path
) -> None:
    moves: list[Move] = []
    lifecycle.observe = moves.append
    lifecycle.notices = Notices(LocalStorage(tmp_path, b"k" * 32), base_url="", url_ttl_s=60)
    other = running_job(lifecycle)
    job = queued_job(lifecycle, webhook="https://example.com/hook")
    pop(lifecycle)
    assert lifecycle.start(job, "w1")
    job_id = job.id
    waiting = queued_job(lifecycle).id
    lifecycle.redis.delete(keys.lease(job_id), keys.lease(other))  # as if the worker died
    assert beat(lifecycle, other, "w1")  # this one's worker is alive after all
    reap = reaper(lifecycle)

    assert reap.reap_once() == {job_id: REQUEUED}
    again = get(lifecycle, job_id)
    assert again.status is JobStatus.QUEUED and again.attempts == 1
    assert again.started_at is None and again.worker is None and again.progress.step == 0
    queue_key = lifecycle.queues.queue("tiny", again.priority).key
    queued = [i.decode() for i in lifecycle.redis.lrange(queue_key, 0, -1)]
    assert again.rq_id is not None and again.rq_id.startswith(job_id + "-r")
    assert queued == [again.rq_id, waiting]  # ahead of the jobs that were waiting
    assert lifecycle.queues.position(again) == 1
    # The old worker, back from the dead, may not finish it.
    assert not beat(lifecycle, job_id, "w1")
    assert not lifecycle.succeed(again, "w1", [], {})

    pop(lifecycle)
    assert lifecycle.start(again, "w2")
    lifecycle.redis.delete(keys.lease(job_id))
    assert reap.reap_once() == {job_id: LOST}
    lost = get(lifecycle, job_id)
    assert lost.status is JobStatus.FAILED and lost.finished_at and lost.attempts == 2
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert lifecycle.redis.sismember(keys.RUNNING, job_id) == 0
    recovered = [(m.after.id, m.after.status) for m in moves if m.name == "recover"]
    assert recovered == [(job_id, JobStatus.QUEUED), (job_id, JobStatus.FAILED)]
    # The failure's webhook went out with the move.
    (delivery_id,) = lifecycle.redis.zrange(keys.WEBHOOKS_DUE, 0, -1)
    raw = lifecycle.redis.get(keys.webhook(delivery_id.decode()))
    body = json.loads(json.loads(raw)["body"])
    assert body["event"] == "completed" and body["job"]["status"] == "failed"


def test_concurrent_reapers_requeue_once(lifecycle: Lifecycle) -> None:
    job_ids = [running_job(lifecycle) for _ in range(20)]
    for job_id in job_ids:
        lifecycle.redis.delete(keys.lease(job_id))
    reapers = [reaper(lifecycle, poison_limit=3) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: r.reap_once(), reapers))
    outcomes = [o for result in results for o in result.items()]
    assert sorted(job_id for job_id, _ in outcomes) == sorted(job_ids)
    queue_key = lifecycle.queues.queue("tiny", Priority.NORMAL).key
    assert lifecycle.redis.llen(queue_key) == 20
    for job_id in job_ids:
        raw = lifecycle.redis.hget(keys.job(job_id), "attempts")
        assert raw is not None and json.loads(raw) == 1


def test_leases_expire_by_themselves(lifecycle: Lifecycle) -> None:
    job_id = running_job(lifecycle)
    assert lifecycle.redis.exists(keys.lease(job_id))
    time.sleep(0.7)
    assert not lifecycle.redis.exists(keys.lease(job_id))
    assert reaper(lifecycle).reap_once() == {job_id: REQUEUED}


def test_a_queued_job_on_no_queue_is_put_back(lifecycle: Lifecycle) -> None:
    """A worker took the job off its queue and died before starting it."""
    adrift, waiting = queued_job(lifecycle), queued_job(lifecycle)
    assert pop(lifecycle) == adrift.id
    reapers = [reaper(lifecycle, adrift_after_s=0.3) for _ in range(3)]
    assert all(r.reap_once() == {} for r in reapers)  # too recent to be looked at
    time.sleep(0.35)
    assert all(r.reap_once() == {} for r in reapers)  # seen adrift: not long enough yet
    assert get(lifecycle, adrift.id).rq_id is None
    time.sleep(0.35)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda r: r.reap_once(), reapers))
    assert [o for result in results for o in result.items()] == [(adrift.id, REQUEUED)]
    back = get(lifecycle, adrift.id)
    assert back.status is JobStatus.QUEUED and back.rq_id and back.attempts == 0
    queue_key = lifecycle.queues.queue("tiny", Priority.NORMAL).key
    queued = [i.decode() for i in lifecycle.redis.lrange(queue_key, 0, -1)]
    assert queued == [back.rq_id, waiting.id]  # at the front, once
    # Both wait on their queue now: nothing more to do, however often it is checked.
    time.sleep(0.35)
    assert all(r.reap_once() == {} for r in reapers)
    time.sleep(0.35)
    assert all(r.reap_once() == {} for r in reapers)


def test_a_job_started_in_time_is_never_taken_for_adrift(lifecycle: Lifecycle) -> None:
    record = queued_job(lifecycle)
    pop(lifecycle)
    reap = reaper(lifecycle, adrift_after_s=0.2)
    time.sleep(0.25)
    assert reap.reap_once() == {}  # seen adrift: the worker has not started it yet
    assert lifecycle.start(record, "w1")
    time.sleep(0.25)
    assert beat(lifecycle, record.id, "w1")  # (the leases of this store last 0.5 s)
    assert reap.reap_once() == {}
    assert get(lifecycle, record.id).status is JobStatus.RUNNING
    assert lifecycle.redis.zscore(keys.QUEUED, record.id) is None
    # Nor is one canceled while adrift.
    other = queued_job(lifecycle)
    pop(lifecycle)
    time.sleep(0.25)
    assert beat(lifecycle, record.id, "w1")
    assert reap.reap_once() == {}
    assert lifecycle.cancel(other) is JobStatus.QUEUED
    time.sleep(0.25)
    assert beat(lifecycle, record.id, "w1")
    assert reap.reap_once() == {}
    assert get(lifecycle, other.id).status is JobStatus.CANCELED
