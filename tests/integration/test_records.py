"""The job record state machine, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from jobs.protocol import JobStatus, JobType, new_job_id, utcnow
from jobs.records import JobError, JobRecord, JobStore, Progress
from tests.integration.services import RedisServer


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[JobStore]:
    yield JobStore(redis.Redis(port=redis_server.port, db=3), ttl_s=120)
    redis.Redis(port=redis_server.port, db=3).flushdb()


def create(store: JobStore) -> JobRecord:
    record = JobRecord(
        id=new_job_id(),
        type=JobType.TXT2IMG,
        model="m",
        status=JobStatus.QUEUED,
        created_at=utcnow(),
        progress=Progress(step=0, total_steps=4),
        params={"type": "txt2img", "prompt": "p"},
    )
    with store.redis.pipeline() as pipe:
        store.create(record, pipe)
        pipe.execute()
    return record


def test_a_record_round_trips_and_expires(store: JobStore) -> None:
    record = create(store)
    assert store.get(record.id) == record
    assert 0 < store.redis.ttl(f"latentq:job:{record.id}") <= 120
    assert store.get(new_job_id()) is None


def test_transitions_are_timestamped_and_terminal_is_final(store: JobStore) -> None:
    record = create(store)
    assert (
        store.transition(
            record.id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker="w1"
        )
        is JobStatus.QUEUED
    )
    running = store.get(record.id)
    assert running and running.status is JobStatus.RUNNING and running.started_at
    assert running.worker == "w1" and running.finished_at is None
    # Only one of two racing workers gets the job.
    assert (
        store.transition(
            record.id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker="w2"
        )
        is None
    )
    assert store.set_progress(record.id, Progress(step=2, total_steps=4, eta_s=1.5), "w1")
    assert not store.set_progress(record.id, Progress(step=3, total_steps=4), "w2")
    assert (
        store.transition(
            record.id,
            JobStatus.FAILED,
            allowed_from=(JobStatus.RUNNING,),
            error=JobError(code="internal", message="boom"),
        )
        is JobStatus.RUNNING
    )
    failed = store.get(record.id)
    assert failed and failed.status is JobStatus.FAILED and failed.finished_at
    assert failed.error == JobError(code="internal", message="boom")
    assert failed.progress == Progress(step=2, total_steps=4, eta_s=1.5)
    for target in JobStatus:
        assert (
            store.transition(
                record.id,
                target,
                allowed_from=tuple(s for s in JobStatus if not s.is_terminal()),
                worker="w1",
            )
            is None
        )
    # A late progress write cannot touch an ended job.
    assert not store.set_progress(record.id, Progress(step=3, total_steps=4), "w1")
    assert store.get(record.id) == failed


def test_missing_record_never_transitions(store: JobStore) -> None:
    assert (
        store.transition(
            new_job_id(), JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker="w1"
        )
        is None
    )
    assert store.redis.keys("latentq:job:*") == []


def test_unknown_fields_are_refused(store: JobStore) -> None:
    record = create(store)
    with pytest.raises(ValueError, match="no record field"):
        store.transition(
            record.id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker="w", colour="red"
        )
