"""Idempotency keys while the first request is still being stored: a retry never makes a
second job, and nobody but the request that holds a key's claim ever gives the claim up.

The job service is called in-process (as routes call it) against a real Redis; the slow part
is a real local storage whose writes take longer than a client's patience, as a large input
on a slow disk or a distant bucket does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from app.main import build_state
from app.service import Accepted, JobService, Submission
from app.settings import AppSettings
from bench.procs import free_port
from jobs.errors import LatentqError
from jobs.idempotency import IdempotencyKeys
from jobs.storage import LocalStorage
from tests.images import noise_image, png_b64
from tests.integration.services import RedisServer, write_catalog


class SlowStorage(LocalStorage):
    """Local files, each write taking `delay_s` first (the first `writes` writes only), or
    failing (a full disk) while `failing`."""

    delay_s = 0.0
    writes = 0
    failing = False

    def put(self, key: str, data: bytes) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        if self.writes > 0:
            self.writes -= 1
            time.sleep(self.delay_s)
        super().put(key, data)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("idempotency-redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def jobs(redis_url: str, tmp_path: Path) -> Iterator[JobService]:
    catalog = write_catalog(tmp_path / "models.toml", tmp_path / "no-weights-needed")
    settings = AppSettings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        catalog=catalog,
        signing_secret="signing-secret-for-the-tests-0123",  # type: ignore[arg-type]
    )
    state = build_state(settings)
    storage = SlowStorage(settings.data_dir, settings.signing_key())
    state.jobs.storage = storage
    state.redis.flushdb()
    yield state.jobs
    state.redis.close()


def img2img(key: str) -> Submission:
    fields = {"type": "img2img", "prompt": "slowly stored", "image": png_b64(noise_image(64, 64))}
    return Submission(fields=fields, files={}, idempotency_key=key)


def slow_first_submit(jobs: JobService, key: str, delay_s: float) -> Future[Accepted]:
    """The first submit under `key`, its input write taking `delay_s`; returns once it holds
    the key's claim."""
    assert isinstance(jobs.storage, SlowStorage)
    jobs.storage.delay_s, jobs.storage.writes = delay_s, 1
    pool = ThreadPoolExecutor(1)
    first = pool.submit(jobs.submit, img2img(key))
    pool.shutdown(wait=False)
    redis_key = IdempotencyKeys._redis_key("anonymous", key)
    deadline = time.monotonic() + 5
    while not jobs.store.redis.exists(redis_key):
        assert time.monotonic() < deadline, "the first submit never claimed the key"
        time.sleep(0.01)
    return first


def jobs_in_redis(jobs: JobService) -> set[str]:
    return {k.decode().rsplit(":", 1)[1] for k in jobs.store.redis.scan_iter("latentq:job:*")}


def test_a_retry_waits_for_the_first_request_and_gets_its_job(jobs: JobService) -> None:
    first = slow_first_submit(jobs, "slow-upload", delay_s=3.0)
    started = time.monotonic()
    retry = jobs.submit(img2img("slow-upload"))
    assert retry.replay
    assert time.monotonic() - started < 5
    assert retry.record.id == first.result(timeout=10).record.id
    assert jobs_in_redis(jobs) == {retry.record.id}


def test_a_retry_past_its_wait_gets_409_and_the_first_claim_stands(jobs: JobService) -> None:
    jobs.idempotency_wait_s = 0.5
    first = slow_first_submit(jobs, "slower-upload", delay_s=3.0)
    with pytest.raises(LatentqError) as info:
        jobs.submit(img2img("slower-upload"))
    assert info.value.status == 409
    assert info.value.code == "idempotency_key_pending"
    assert int(info.value.headers["Retry-After"]) >= 1
    accepted = first.result(timeout=10)
    assert not accepted.replay
    # The key still stands for the first job: a later retry gets it, and there is one job.
    again = jobs.submit(img2img("slower-upload"))
    assert again.replay and again.record.id == accepted.record.id
    assert jobs_in_redis(jobs) == {accepted.record.id}


def test_many_retries_during_a_slow_first_request_make_one_job(jobs: JobService) -> None:
    first = slow_first_submit(jobs, "stampede", delay_s=2.0)
    with ThreadPoolExecutor(6) as pool:
        retries = list(pool.map(lambda _: jobs.submit(img2img("stampede")), range(6)))
    ids = {first.result(timeout=10).record.id} | {r.record.id for r in retries}
    assert len(ids) == 1
    assert jobs_in_redis(jobs) == ids


def test_a_failed_first_request_gives_the_key_back_to_the_next(jobs: JobService) -> None:
    """The claim is released by its owner only: the next request under the key starts afresh."""
    assert isinstance(jobs.storage, SlowStorage)
    jobs.storage.failing = True
    with pytest.raises(OSError):
        jobs.submit(img2img("fails-then-works"))
    jobs.storage.failing = False
    ok = jobs.submit(img2img("fails-then-works"))
    assert not ok.replay
    # A stale release by someone who does not own the claim changes nothing.
    jobs.idempotency.release("anonymous", "fails-then-works", "j_not_the_owner")
    again = jobs.submit(img2img("fails-then-works"))
    assert again.replay and again.record.id == ok.record.id
