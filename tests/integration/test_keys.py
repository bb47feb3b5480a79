"""API keys: every /v1 route needs one, a job belongs to its key, submits are rate limited."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.auth import hash_key
from tests.integration.helpers import sse_events, wait
from tests.integration.services import Service, start_api

ALICE, BOB = "lq_alice-test-key-0123456789", "lq_bob-test-key-0123456789"
FAST = {"type": "txt2img", "prompt": "mine", "steps": 2}


@pytest.fixture(scope="module")
def keyed(service: Service) -> Iterator[str]:
    """A second API replica, with keys, on the same Redis and workers as `service`."""
    env = {
        **service.env,
        "LATENTQ_API_KEYS": f"alice:{hash_key(ALICE)},bob:{hash_key(BOB)}",
        "LATENTQ_RATE_LIMIT_PER_MIN": "30",
        "LATENTQ_RATE_LIMIT_BURST": "8",
    }
    process, base = start_api(env, service.workdir, "api-keyed")
    try:
        yield base
    finally:
        process.stop()


def client(base: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def test_every_v1_route_needs_a_key(keyed: str) -> None:
    with client(keyed, None) as anonymous, client(keyed, "lq_wrong") as wrong:
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs/j_" + "a" * 22),
            ("DELETE", "/v1/jobs/j_" + "a" * 22),
            ("GET", "/v1/jobs/j_" + "a" * 22 + "/events"),
            ("GET", "/v1/files/jobs/x/0.png?expires=1&sig=x"),
            ("POST", "/v1/images/generations"),
        ):
            missing = anonymous.request(method, path, json={})
            assert missing.status_code == 401, (path, missing.text)
            assert missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"].startswith("Bearer")
            bad = wrong.request(method, path, json={})
            assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_a_job_belongs_to_its_key(keyed: str) -> None:
    with client(keyed, ALICE) as alice, client(keyed, BOB) as bob:
        assert alice.get("/v1/models").status_code == 200
        job = alice.post("/v1/jobs", json=FAST).json()
        done = wait(alice, job["id"])
        assert done["status"] == "succeeded"
        url = done["result"]["images"][0]["url"]
        assert alice.get(url).status_code == 200
        # Bob sees nothing of it: not the job, its events, its cancel, nor its files.
        for response in (
            bob.get(f"/v1/jobs/{job['id']}"),
            bob.get(f"/v1/jobs/{job['id']}/events"),
            bob.delete(f"/v1/jobs/{job['id']}"),
            bob.get(url),
        ):
            assert response.status_code == 404, response.text
        assert bob.get(f"/v1/jobs/{job['id']}").json()["error"]["code"] == "job_not_found"
        # Alice does.
        assert [name for name, _ in sse_events(alice, f"/v1/jobs/{job['id']}/events")] == [
            "succeeded"
        ]
        assert alice.delete(f"/v1/jobs/{job['id']}").status_code == 409


def test_idempotency_keys_are_per_caller(keyed: str) -> None:
    headers = {"Idempotency-Key": "same-key-for-both"}
    with client(keyed, ALICE) as alice, client(keyed, BOB) as bob:
        first = alice.post("/v1/jobs", json=FAST, headers=headers).json()
        other = bob.post("/v1/jobs", json=FAST, headers=headers).json()
        assert first["id"] != other["id"]


def test_submits_are_rate_limited_per_key(keyed: str) -> None:
    with client(keyed, BOB) as bob, client(keyed, ALICE) as alice:
        statuses = [bob.post("/v1/jobs", json=FAST).status_code for _ in range(12)]
        assert 429 in statuses and statuses[0] == 202
        limited = bob.post("/v1/jobs", json=FAST)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # Reading is not limited, and another key has its own budget.
        assert bob.get("/v1/models").status_code == 200
        assert alice.post("/v1/jobs", json=FAST).status_code == 202


def test_callers_do_not_see_which_worker_host_ran_their_job(keyed: str, service: Service) -> None:
    """A worker's name is its host and PID by default: for the operator, not for every key.
    (Open mode on loopback is the operator's own machine: there it shows.)"""
    with client(keyed, ALICE) as alice, client(service.base_url, None) as local:
        job = alice.post("/v1/jobs", json=FAST).json()
        events = sse_events(alice, f"/v1/jobs/{job['id']}/events")
        done = wait(alice, job["id"])
        assert done["status"] == "succeeded"
        assert done["worker"] is None
        assert all(data.get("worker") is None for name, data in events if name != "progress")
        runtimes = [r for m in alice.get("/v1/models").json()["data"] for r in m["runtime"]]
        assert runtimes and all(r.get("worker") is None for r in runtimes)
        # The operator, on the machine itself, does see it.
        assert local.get(f"/v1/jobs/{job['id']}").status_code == 404  # another caller's job
        mine = wait(local, local.post("/v1/jobs", json=FAST).json()["id"])
        assert mine["worker"] == "worker-1"
        runtimes = [r for m in local.get("/v1/models").json()["data"] for r in m["runtime"]]
        assert {r["worker"] for r in runtimes} == {"worker-1"}
