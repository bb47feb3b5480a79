"""Job records and the moves of `jobs.lifecycle`, on a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.errors import FailureCode
from jobs.lifecycle import Lifecycle, Move
from jobs.protocol import JobStatus, Txt2ImgParams, new_job_id
from jobs.queueing import JobQueues
from jobs.records import JobRecord, JobStore, Progress, UnreadableParams
from jobs.storage import LocalStorage
from jobs.webhooks import Notices
from tests.integration.services import RedisServer
from tests.records import TXT2IMG, job_record

DB = 3


@pytest.fixture
def moves() -> list[Move]:
    return []


@pytest.fixture
def lifecycle(redis_server: RedisServer, moves: list[Move]) -> Iterator[Lifecycle]:
    connection = redis.Redis(port=redis_server.port, db=DB)
    connection.flushdb()
    store = JobStore(connection, ttl_s=120)
    queues = JobQueues(connection, store, queue_max=100, job_timeout_s=60)
    yield Lifecycle(queues, observe=moves.append)
    connection.flushdb()


def queued(lifecycle: Lifecycle, **params: object) -> JobRecord:
    record = job_record({**TXT2IMG, **params}, timeout_s=30)
    lifecycle.enqueue(record)
    return record


def rq_ids(lifecycle: Lifecycle, priority: str = "normal") -> list[str]:
    key = lifecycle.queues.queue("m", priority).key  # type: ignore[arg-type]
    return [i.decode() for i in lifecycle.redis.lrange(key, 0, -1)]


def test_a_record_round_trips_typed_and_expires(lifecycle: Lifecycle) -> None:
    record = queued(lifecycle, n=2, priority="high")
    stored = lifecycle.store.get(record.id)
    assert stored == record
    assert isinstance(stored.params, Txt2ImgParams) and stored.params.n == 2
    assert stored.priority == "high"
    assert 0 < lifecycle.redis.ttl(keys.job(record.id)) <= 120
    assert lifecycle.store.get(new_job_id()) is None
    with pytest.raises(ValueError, match="exists already"):
        lifecycle.enqueue(record)


def test_params_that_do_not_validate_leave_the_record_readable(lifecycle: Lifecycle) -> None:
    record = job_record({**TXT2IMG, "steps": 999}, timeout_s=30)
    assert isinstance(record.params, UnreadableParams)
    assert "steps" in record.params.problem
    lifecycle.enqueue(record)
    stored = lifecycle.store.get(record.id)
    assert stored is not None and isinstance(stored.params, UnreadableParams)
    assert stored.params_data()["steps"] == 999 and stored.priority == "normal"


def test_the_enqueued_rq_job_is_the_one_rq_itself_would_write(lifecycle: Lifecycle) -> None:
    record = queued(lifecycle)
    connection = lifecycle.redis
    queue = Queue("latentq.m.normal", connection=connection, serializer=JSONSerializer)
    # The same enqueue, by RQ itself, of a twin job.
    twin = queue.enqueue_call(
        keys.RUN_JOB, args=("twin",), job_id="twin", timeout=30, result_ttl=0, failure_ttl=120
    )
    ours = {k.decode(): v for k, v in connection.hgetall(Job.key_for(record.id)).items()}
    theirs = {k.decode(): v for k, v in connection.hgetall(twin.key).items()}
    assert set(ours) == set(theirs)
    for same in ("status", "origin", "timeout", "result_ttl", "failure_ttl", "description"):
        assert ours[same] == theirs[same].replace(b"twin", record.id.encode()), same
    assert queue.get_job_ids() == [record.id, "twin"]
    assert queue.key.encode() in connection.smembers(Queue.redis_queues_keys)
    job = Job.fetch(record.id, connection=connection, serializer=JSONSerializer)
    assert job.func_name == keys.RUN_JOB and list(job.args) == [record.id]
    assert job.get_status() == "queued" and job.origin == queue.name and job.timeout == 30


def test_moves_are_timestamped_and_terminal_is_final(
    lifecycle: Lifecycle, moves: list[Move]
) -> None:
    record = queued(lifecycle)
    running = lifecycle.start(record, "w1")
    assert running is not None and running.status is JobStatus.RUNNING and running.started_at
    assert lifecycle.store.get(record.id) == running
    assert running.worker == "w1" and running.finished_at is None
    assert lifecycle.redis.sismember(keys.RUNNING, record.id)
    assert lifecycle.redis.get(keys.lease(record.id)) == b'"w1"'
    assert lifecycle.redis.zscore(keys.QUEUED, record.id) is None
    # Only one of two racing workers gets the job.
    assert lifecycle.start(record, "w2") is None
    assert (
        lifecycle.progress(
            "w1", {record.id: (running, Progress(step=2, total_steps=4, eta_s=1.5), False)}
        )
        == set()
    )
    assert lifecycle.progress(
        "w2", {record.id: (running, Progress(step=3, total_steps=4), False)}
    ) == {record.id}
    assert not lifecycle.succeed(running, "w2", [], {})  # only the holder ends it
    assert lifecycle.fail(running, "w1", FailureCode.INTERNAL, "boom")
    failed = lifecycle.store.get(record.id)
    assert failed and failed.status is JobStatus.FAILED and failed.finished_at
    assert failed.error is not None and failed.error.code == "internal"
    assert failed.error.message == "boom"
    assert failed.progress == Progress(step=2, total_steps=4, eta_s=1.5)
    assert not lifecycle.redis.sismember(keys.RUNNING, record.id)
    assert not lifecycle.redis.exists(keys.lease(record.id))
    # Nothing moves an ended job.
    assert lifecycle.start(failed, "w1") is None
    assert not lifecycle.succeed(failed, "w1", [], {})
    assert not lifecycle.expire(failed, "w1")
    assert lifecycle.cancel(failed) is None
    assert not lifecycle.give_back(failed, "w1")
    assert lifecycle.recover(failed, poison_limit=3) is None
    # A late progress write cannot touch an ended job.
    assert lifecycle.progress("w1", {record.id: (running, Progress(step=3, total_steps=4), False)})
    assert lifecycle.store.get(record.id) == failed
    assert [(m.name, m.previous) for m in moves] == [
        ("enqueue", None),
        ("start", JobStatus.QUEUED),
        ("fail", JobStatus.RUNNING),
    ]


def test_a_missing_record_never_moves(lifecycle: Lifecycle) -> None:
    ghost = job_record(timeout_s=30)
    assert lifecycle.start(ghost, "w1") is None
    assert lifecycle.cancel(ghost) is None
    assert lifecycle.redis.keys("latentq:job:*") == []
    assert not lifecycle.redis.sismember(keys.RUNNING, ghost.id)


def test_cancel_takes_a_queued_job_off_its_queue(lifecycle: Lifecycle) -> None:
    first, second = queued(lifecycle), queued(lifecycle)
    assert lifecycle.cancel(first) is JobStatus.QUEUED
    assert rq_ids(lifecycle) == [second.id]
    assert lifecycle.redis.zscore(keys.QUEUED, first.id) is None
    # RQ's copy is left to expire.
    assert 0 < lifecycle.redis.ttl(Job.key_for(first.id)) <= 120
    canceled = lifecycle.store.get(first.id)
    assert canceled and canceled.status is JobStatus.CANCELED and canceled.finished_at


def test_a_batch_companion_leaves_its_queue_as_it_starts(lifecycle: Lifecycle) -> None:
    lead, companion, other = queued(lifecycle), queued(lifecycle), queued(lifecycle)
    lifecycle.redis.lpop(lifecycle.queues.queue("m", "normal").key)  # the lead, dequeued
    assert lifecycle.start(lead, "w1") is not None
    assert lifecycle.start(companion, "w1", take_from_queue=True) is not None
    assert rq_ids(lifecycle) == [other.id]


def test_give_back_requeues_at_the_front_in_one_step(lifecycle: Lifecycle) -> None:
    record, waiting = queued(lifecycle), queued(lifecycle)
    lifecycle.redis.lpop(lifecycle.queues.queue("m", "normal").key)
    running = lifecycle.start(record, "w1")
    assert running is not None
    assert not lifecycle.give_back(running, "w2")
    assert lifecycle.give_back(running, "w1")
    back = lifecycle.store.get(record.id)
    assert back is not None and back.status is JobStatus.QUEUED
    assert back.worker is None and back.started_at is None and back.progress.step == 0
    assert back.rq_id is not None and back.rq_id.startswith(record.id + "-r")
    assert rq_ids(lifecycle) == [back.rq_id, waiting.id]
    assert lifecycle.queues.position(back) == 1
    assert lifecycle.redis.zscore(keys.QUEUED, record.id) is not None
    assert not lifecycle.redis.sismember(keys.RUNNING, record.id)
    rq_job = Job.fetch(back.rq_id, connection=lifecycle.redis, serializer=JSONSerializer)
    assert list(rq_job.args) == [record.id] and rq_job.get_status() == "queued"


def test_a_move_writes_its_webhook_in_the_same_step(lifecycle: Lifecycle, tmp_path: Path) -> None:
    lifecycle.notices = Notices(LocalStorage(tmp_path, b"k" * 32), base_url="", url_ttl_s=60)
    hooked = queued(
        lifecycle, webhook="https://example.com/hook", webhook_events=["start", "completed"]
    )
    plain = queued(lifecycle)
    for record in (hooked, plain):
        assert lifecycle.start(record, "w1") is not None
    assert lifecycle.cancel(hooked) is JobStatus.RUNNING
    assert lifecycle.cancel(plain) is JobStatus.RUNNING
    due = [i.decode() for i in lifecycle.redis.zrange(keys.WEBHOOKS_DUE, 0, -1)]
    bodies = [json.loads(json.loads(lifecycle.redis.get(keys.webhook(i)))["body"]) for i in due]
    assert [(b["event"], b["job"]["id"], b["job"]["status"]) for b in bodies] == [
        ("start", hooked.id, "running"),
        ("completed", hooked.id, "canceled"),
    ]
