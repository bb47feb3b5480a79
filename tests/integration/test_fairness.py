"""Fairness between API keys, over real HTTP with a real Redis: a key's share of a model's
queue, its scopes, and its cap on open streams and waits.

No worker serves the model here, so jobs stay queued and streams stay open for as long as
a test needs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.auth import hash_key
from bench.procs import free_port, wait_for
from tests.integration.services import RedisServer, service_env, start_api, write_catalog

ALICE, BOB = "lq_alice-fair-0123456789", "lq_bob-fair-0123456789"
ADMIN_KEY = "lq_root-fair-0123456789"
JOB = {"type": "txt2img", "prompt": "waits", "steps": 2}
STREAMS = 2


@pytest.fixture(scope="module")
def fair(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[tuple[str, int, dict[str, str]]]:
    """An API with three keys on a Redis of its own: alice may submit at high priority, bob's
    entry is written as before scopes existed, root is an admin. A queue of 8 per model, a
    quarter of it per key; two streams or waits per key."""
    workdir = tmp_path_factory.mktemp("fairness")
    server = RedisServer(free_port(), workdir)
    server.start()
    env = service_env(
        server.url,
        workdir / "data",
        write_catalog(workdir / "models.toml", tiny_model),
        LATENTQ_API_KEYS=(
            f"alice:{hash_key(ALICE)}:priority:high,bob:{hash_key(BOB)},"
            f"root:{hash_key(ADMIN_KEY)}:admin"
        ),
        LATENTQ_QUEUE_MAX="8",
        LATENTQ_KEY_QUEUE_SHARE="0.25",
        LATENTQ_STREAMS_PER_KEY=str(STREAMS),
    )
    process, base = start_api(env, workdir)
    try:
        yield base, server.port, env
    finally:
        process.stop()
        server.stop()


@pytest.fixture
def base(fair: tuple[str, int, dict[str, str]]) -> Iterator[str]:
    """The API; every job of the test is canceled after it (their shares freed)."""
    url, port, _ = fair
    yield url
    store = redis.Redis(port=port)
    for key in store.scan_iter("latentq:job:*"):
        job_id = key.decode().rsplit(":", 1)[1]
        with client(url, ADMIN_KEY) as root:
            root.delete(f"/v1/jobs/{job_id}")


def client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_one_key_cannot_fill_a_models_queue(base: str) -> None:
    with client(base, ALICE) as alice, client(base, BOB) as bob:
        first = [alice.post("/v1/jobs", json=JOB) for _ in range(2)]
        assert [r.status_code for r in first] == [202, 202]
        over = alice.post("/v1/jobs", json=JOB)
        assert over.status_code == 429, over.text
        error = over.json()["error"]
        assert error["code"] == "queue_share_full"
        assert "2 jobs waiting for model tiny" in error["message"]
        assert int(over.headers["retry-after"]) > 0
        # Everyone else is still served, and each model has its own share.
        assert bob.post("/v1/jobs", json=JOB).status_code == 202
        assert alice.post("/v1/jobs", json={**JOB, "model": "txt-only"}).status_code == 202
        # A job that stops waiting frees its place in the share.
        assert alice.delete(f"/v1/jobs/{first[0].json()['id']}").status_code == 200
        assert alice.post("/v1/jobs", json=JOB).status_code == 202
        assert alice.post("/v1/jobs", json=JOB).status_code == 429


def test_high_priority_needs_the_scope(base: str) -> None:
    high = {**JOB, "priority": "high"}
    with client(base, ALICE) as alice, client(base, BOB) as bob, client(base, ADMIN_KEY) as root:
        refused = bob.post("/v1/jobs", json=high)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "priority_not_allowed"
        assert refused.json()["error"]["param"] == "priority"
        # The OpenAI-compatible route checks the same, in OpenAI's error shape.
        openai = bob.post(
            "/v1/images/generations", json={"prompt": "x", "priority": "high", "size": "64x64"}
        )
        assert openai.status_code == 403, openai.text
        assert openai.json()["error"]["code"] == "priority_not_allowed"
        # Bob's key, from before scopes, still works at the other priorities.
        mine = bob.post("/v1/jobs", json={**JOB, "priority": "low"})
        assert mine.status_code == 202
        assert alice.post("/v1/jobs", json=high).status_code == 202
        assert root.post("/v1/jobs", json=high).status_code == 202
        # An admin sees and cancels any key's job; others still get 404.
        job_id = mine.json()["id"]
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
        assert root.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        assert root.delete(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def holds(port: int, caller: str) -> int:
    return int(redis.Redis(port=port).zcard(f"latentq:holds:{caller}"))


def test_open_streams_and_waits_per_key_are_capped_and_released(
    base: str, fair: tuple[str, int, dict[str, str]]
) -> None:
    port = fair[1]
    with client(base, ALICE) as alice, client(base, BOB) as bob:
        job_id = alice.post("/v1/jobs", json=JOB).json()["id"]
        path = f"/v1/jobs/{job_id}/events"
        opened = []
        for _ in range(STREAMS):
            stream = alice.stream("GET", path)
            response = stream.__enter__()
            assert response.status_code == 200
            lines = response.iter_lines()  # kept: a dropped iterator closes the response
            assert next(lines).startswith("event: state")
            opened.append((stream, lines))
        assert holds(port, "alice") == STREAMS
        over = alice.get(path)
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "too_many_streams"
        assert int(over.headers["retry-after"]) > 0
        # A wait counts too, and is refused before any job is made.
        queued = redis.Redis(port=port).llen("rq:queue:latentq.tiny.normal")
        waiting = alice.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=5"})
        assert waiting.status_code == 429 and waiting.json()["error"]["code"] == "too_many_streams"
        assert redis.Redis(port=port).llen("rq:queue:latentq.tiny.normal") == queued
        # Another key has its own.
        bob_job = bob.post("/v1/jobs", json=JOB).json()["id"]
        with bob.stream("GET", f"/v1/jobs/{bob_job}/events") as other:
            assert other.status_code == 200
        # The client going away releases the stream at once.
        stream, response = opened.pop()
        stream.__exit__(None, None, None)
        wait_for(lambda: holds(port, "alice") == STREAMS - 1, 5, "the stream's release")
        with alice.stream("GET", path) as again:
            assert again.status_code == 200
        wait_for(lambda: holds(port, "alice") == STREAMS - 1, 5, "the stream's release")

        # A wait whose client gives up is released long before the wait would have ended.
        def impatient() -> None:
            with client(base, ALICE) as quick:
                try:
                    quick.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=60"}, timeout=1)
                except httpx.TimeoutException:
                    pass

        thread = threading.Thread(target=impatient)
        thread.start()
        wait_for(lambda: holds(port, "alice") == STREAMS, 5, "the wait's hold")
        thread.join()
        started = time.monotonic()
        wait_for(lambda: holds(port, "alice") == STREAMS - 1, 10, "the wait's release")
        assert time.monotonic() - started < 10
        for stream, _ in opened:
            stream.__exit__(None, None, None)
        wait_for(lambda: holds(port, "alice") == 0, 5, "every release")


@pytest.mark.slow
def test_the_holds_of_a_replica_that_dies_expire(
    base: str, fair: tuple[str, int, dict[str, str]], tmp_path: Path
) -> None:
    _, port, env = fair
    with client(base, BOB) as bob:
        job_id = bob.post("/v1/jobs", json=JOB).json()["id"]
    # A second replica on the same Redis holds two of bob's streams, then is killed.
    process, other = start_api(env, tmp_path, "api-doomed")
    try:
        with client(other, BOB) as doomed:
            streams = []
            for _ in range(STREAMS):
                stream = doomed.stream("GET", f"/v1/jobs/{job_id}/events")
                response = stream.__enter__()
                lines = response.iter_lines()
                assert next(lines).startswith("event: state")
                streams.append((stream, lines))
            assert holds(port, "bob") == STREAMS
            process.popen.kill()
            process.popen.wait()
        with client(base, BOB) as bob:
            assert bob.get(f"/v1/jobs/{job_id}/events").status_code == 429
            killed = time.monotonic()
            wait_for(lambda: holds(port, "bob") == 0, 45, "the holds' expiry")
            assert time.monotonic() - killed <= 35
            with bob.stream("GET", f"/v1/jobs/{job_id}/events") as again:
                assert again.status_code == 200
    finally:
        process.stop()
