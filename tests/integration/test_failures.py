"""What happens when things go wrong: jobs fail cleanly, Redis down means 503, never 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from bench.procs import free_port
from jobs import keys
from jobs.records import JobRecord, Progress, encode
from tests.images import noise_image, png_b64
from tests.integration.helpers import submit, wait
from tests.integration.services import RedisServer, Service, own_service, service_env, write_catalog
from tests.records import job_record


def enqueue_raw(service: Service, record: JobRecord) -> None:
    """Put a record on the queue behind the API's back, as a bad actor or a bug could."""
    client = service.redis.client()
    queue = Queue(keys.queue(record.model, "normal"), connection=client, serializer=JSONSerializer)
    with client.pipeline() as pipe:
        pipe.multi()
        pipe.hset(keys.job(record.id), mapping=encode(record))
        pipe.expire(keys.job(record.id), 600)
        queue.enqueue_call(
            keys.RUN_JOB, args=(record.id,), job_id=record.id, result_ttl=0, pipeline=pipe
        )
        pipe.execute()


def test_invalid_params_in_the_queue_fail_the_job_not_the_worker(
    api: httpx.Client, service: Service
) -> None:
    bad = job_record(
        {"type": "txt2img", "model": "tiny", "prompt": "x", "steps": 999},
        model="tiny",
        progress=Progress(step=0, total_steps=2),
    )
    enqueue_raw(service, bad)
    job = wait(api, bad.id)
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_input"
    assert "steps" in job["error"]["message"]
    # The worker goes on with the next job.
    after = wait(api, submit(api, type="txt2img", prompt="next", steps=2)["id"])
    assert after["status"] == "succeeded"


def test_lost_input_fails_the_job(api: httpx.Client, service: Service) -> None:
    lost = job_record(
        {
            "type": "outpaint",
            "model": "tiny",
            "prompt": "x",
            "steps": 2,
            "seed": 1,
            "outpaint": {"left": 8},
            "scheduler": "euler",
            "guidance_scale": 5.0,
        },
        model="tiny",
        progress=Progress(step=0, total_steps=2),
        inputs={"image": "jobs/j_gone/input-image.png"},
    )
    enqueue_raw(service, lost)
    job = wait(api, lost.id)
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_input"


def test_a_job_is_run_at_most_once_per_status(api: httpx.Client, service: Service) -> None:
    done = wait(api, submit(api, type="txt2img", prompt="once", steps=2)["id"])
    assert done["status"] == "succeeded"
    # The same id enqueued again (a duplicate delivery) leaves the finished job alone.
    client = service.redis.client()
    queue = Queue(keys.queue("tiny", "normal"), connection=client, serializer=JSONSerializer)
    queue.enqueue_call(keys.RUN_JOB, args=(done["id"],), result_ttl=0)
    time.sleep(1.0)
    again = api.get(f"/v1/jobs/{done['id']}").json()
    assert again["status"] == "succeeded" and again["finished_at"] == done["finished_at"]


@pytest.fixture
def api_without_redis(tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Service, RedisServer]]:
    server = RedisServer(free_port(), tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    env = service_env(server.url, tmp_path / "data", catalog)
    svc = Service(redis=server, workdir=tmp_path, env=env)
    svc.start_api()
    try:
        yield svc, server
    finally:
        svc.stop()
        server.stop()


def test_redis_down_gives_503_and_recovers(
    api_without_redis: tuple[Service, RedisServer],
) -> None:
    svc, server = api_without_redis
    with httpx.Client(base_url=svc.base_url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        server.stop()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "service_unavailable"
        image = png_b64(noise_image(64, 64))
        for body in (
            {"type": "txt2img", "prompt": "x"},
            {"type": "outpaint", "prompt": "x", "image": image, "outpaint": {"left": 8}},
        ):
            down = client.post("/v1/jobs", json=body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "service_unavailable"
            assert down.headers["retry-after"]
        assert client.get("/v1/jobs/j_" + "a" * 22).status_code == 503
        assert client.get("/v1/models").status_code == 503
        assert client.get("/metrics").status_code == 200
        assert client.get("/healthz").status_code == 200
        server.start()
        assert client.get("/readyz").status_code == 200
        accepted = client.post("/v1/jobs", json={"type": "txt2img", "prompt": "back"})
        assert accepted.status_code == 202


def test_a_job_past_its_time_limit_ends_timeout(tiny_model: Path, tmp_path: Path) -> None:
    """With a limit of 1 s + 1 ms per megapixel-step, a 256² × 150-step job times out."""
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    with (
        own_service(
            tmp_path,
            catalog,
            "timed",
            "tiny",
            LATENTQ_JOB_TIMEOUT_FLOOR_S="1",
            LATENTQ_TIMEOUT_S_PER_MP_STEP="0.001",
        ) as svc,
        httpx.Client(base_url=svc.base_url, timeout=30) as api,
    ):
        job = submit(api, type="txt2img", prompt="slow", width=256, height=256, steps=150)
        ended = wait(api, job["id"], timeout=60)
        assert ended["status"] == "failed" and ended["error"]["code"] == "timeout"
        # The worker goes on with the next job.
        after = wait(api, submit(api, type="txt2img", prompt="quick", steps=2)["id"])
        assert after["status"] == "succeeded"


def test_a_full_queue_answers_429_with_retry_after(
    redis_server: RedisServer, tiny_model: Path, tmp_path: Path
) -> None:
    """No worker serves this Redis database: jobs wait, and the third is one too many."""
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    env = service_env(
        f"redis://127.0.0.1:{redis_server.port}/9",
        tmp_path / "data",
        catalog,
        LATENTQ_QUEUE_MAX="2",
    )
    svc = Service(redis=redis_server, workdir=tmp_path, env=env)
    try:
        svc.start_api()
        with httpx.Client(base_url=svc.base_url, timeout=30) as api:
            body = {"type": "txt2img", "prompt": "waits", "steps": 2}
            assert [api.post("/v1/jobs", json=body).status_code for _ in range(2)] == [202, 202]
            full = api.post("/v1/jobs", json=body)
            assert full.status_code == 429
            assert full.json()["error"]["code"] == "queue_full"
            assert int(full.headers["retry-after"]) > 0
            # Another model has its own queue.
            other = api.post("/v1/jobs", json={**body, "model": "txt-only"})
            assert other.status_code == 202
    finally:
        svc.stop()
        redis_server.client().connection_pool.reset()
        import redis as redis_lib

        redis_lib.Redis(port=redis_server.port, db=9).flushdb()


def test_sigterm_to_the_api_lets_in_flight_requests_finish(
    service: Service, tmp_path: Path
) -> None:
    """A second replica on the same Redis and workers, stopped while it holds a request."""
    import signal
    import threading

    svc = Service(redis=service.redis, workdir=tmp_path, env=service.env)
    process = svc.start_api()
    answers: list[httpx.Response] = []
    body = {"type": "txt2img", "prompt": "in flight", "width": 256, "height": 256, "steps": 30}

    def hold() -> None:
        with httpx.Client(base_url=svc.base_url, timeout=60) as api:
            answers.append(api.post("/v1/jobs", json=body, headers={"Prefer": "wait=30"}))

    caller = threading.Thread(target=hold)
    caller.start()
    time.sleep(1.0)
    process.popen.send_signal(signal.SIGTERM)
    caller.join(60)
    # uvicorn shuts down gracefully, then re-raises the signal it got.
    assert process.popen.wait(30) in (0, -signal.SIGTERM)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["status"] == "succeeded"
