"""The job lifecycle over real HTTP: wait, events, cancel."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import httpx

from tests.integration.helpers import sse_events, submit, wait

FAST = {"steps": 3, "guidance_scale": 5.0}


def test_prefer_wait_returns_the_finished_job(api: httpx.Client) -> None:
    response = api.post(
        "/v1/jobs",
        json={"type": "txt2img", "prompt": "waited", **FAST},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded" and job["result"]["images"]
    assert response.headers["preference-applied"] == "wait=30"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"


def test_prefer_wait_gives_up_with_202(api: httpx.Client) -> None:
    started = time.monotonic()
    response = api.post(
        "/v1/jobs",
        json={"type": "txt2img", "prompt": "slow", "width": 256, "height": 256, "steps": 60},
        headers={"Prefer": "respond-async, wait=1"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] in ("queued", "running")
    assert 0.9 <= elapsed < 5
    wait(api, response.json()["id"])


def told_to_wait(job: dict[str, Any]) -> int:
    """The Retry-After a job not yet ended should carry: a running job's ETA, a queued job's
    place in the queue, in whole seconds from 1 to 5."""
    if job["status"] == "running":
        eta = job["progress"]["eta_s"]
        guess = eta if eta is not None else 1
    else:
        guess = job["queue_position"]
    return max(1, min(5, math.ceil(guess)))


def test_get_long_polls_until_the_status_changes(api: httpx.Client) -> None:
    blocker = submit(api, type="txt2img", prompt="blocker", width=256, height=256, steps=20)
    queued = submit(api, type="txt2img", prompt="polled", **FAST)
    job_url = f"/v1/jobs/{queued['id']}"
    first = api.get(job_url)
    assert first.json()["status"] == "queued" and "preference-applied" not in first.headers
    # Queued: asked to come back after a second per place in the queue, at most 5.
    assert first.headers["retry-after"] == str(told_to_wait(first.json()))
    seen, started = "queued", time.monotonic()
    statuses = []
    while seen != "succeeded":
        response = api.get(job_url, headers={"Prefer": "wait=30"})
        assert response.status_code == 200 and response.headers["preference-applied"] == "wait=30"
        current = response.json()["status"]
        assert current != seen, "a long poll came back with no change"
        statuses.append(current)
        seen = current
        if current != "succeeded":
            assert response.headers["retry-after"] == str(told_to_wait(response.json()))
        else:
            assert "retry-after" not in response.headers
        assert time.monotonic() - started < 60
    # Each answer is a change: queued → running → succeeded in two long polls (or one, when
    # the job ran between them).
    assert statuses in (["running", "succeeded"], ["succeeded"]), statuses
    assert wait(api, blocker["id"])["status"] == "succeeded"
    # On an ended job a long poll answers at once.
    at_once = time.monotonic()
    ended = api.get(job_url, headers={"Prefer": "wait=30"})
    assert ended.json()["status"] == "succeeded" and time.monotonic() - at_once < 2


def test_get_long_poll_gives_up_after_its_wait(api: httpx.Client) -> None:
    blocker = submit(api, type="txt2img", prompt="blocker", width=256, height=256, steps=30)
    queued = submit(api, type="txt2img", prompt="still queued", **FAST)
    started = time.monotonic()
    response = api.get(f"/v1/jobs/{queued['id']}", headers={"Prefer": "wait=1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert 0.9 <= elapsed < 5
    assert response.headers["retry-after"] == str(told_to_wait(response.json()))
    wait(api, queued["id"])
    wait(api, blocker["id"])


def test_events_stream_progress_then_one_final_event(api: httpx.Client) -> None:
    job = submit(api, type="txt2img", prompt="streamed", width=256, height=256, steps=6)
    events = sse_events(api, f"/v1/jobs/{job['id']}/events")
    names = [name for name, _ in events]
    assert names.count("succeeded") == 1 and names[-1] == "succeeded", names
    assert not {"failed", "canceled"} & set(names)
    progress = [data for name, data in events if name == "progress"]
    assert len(progress) >= 1
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps) and all(p["total_steps"] == 6 for p in progress)
    final = events[-1][1]
    assert final["id"] == job["id"] and final["result"]["images"]
    for name, data in events:
        if name == "state":
            assert data["id"] == job["id"] and data["status"] in ("queued", "running")


def test_events_after_the_end_give_the_final_event_at_once(api: httpx.Client) -> None:
    job = wait(api, submit(api, type="txt2img", prompt="late", **FAST)["id"])
    started = time.monotonic()
    events = sse_events(api, f"/v1/jobs/{job['id']}/events")
    assert [name for name, _ in events] == ["succeeded"]
    assert events[0][1]["result"] == job["result"] or events[0][1]["id"] == job["id"]
    assert time.monotonic() - started < 2


def test_events_of_an_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/j_" + "b" * 22 + "/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_a_canceled_queued_job_never_runs(api: httpx.Client) -> None:
    blocker = submit(api, type="txt2img", prompt="blocker", width=256, height=256, steps=30)
    queued = submit(api, type="txt2img", prompt="never", **FAST)
    response = api.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled" and response.json()["finished_at"]
    wait(api, blocker["id"])
    time.sleep(0.5)
    job = api.get(f"/v1/jobs/{queued['id']}").json()
    assert job["status"] == "canceled" and job["started_at"] is None
    assert job["progress"]["step"] == 0 and job["result"] is None
    again = api.delete(f"/v1/jobs/{queued['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancelable"


def test_a_running_job_stops_at_its_next_step(api: httpx.Client) -> None:
    job = submit(api, type="txt2img", prompt="long", width=256, height=256, steps=150)
    events: list[tuple[str, Any]] = []
    reader = threading.Thread(
        target=lambda: events.extend(sse_events(api, f"/v1/jobs/{job['id']}/events"))
    )
    reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = api.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] == "running" and current["progress"]["step"] >= 3:
            break
        time.sleep(0.02)
    canceled_at = time.monotonic()
    response = api.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    # The worker is free again within 2 s: a job submitted now starts at once.
    after = submit(api, type="txt2img", prompt="next", priority="high", **FAST)
    while api.get(f"/v1/jobs/{after['id']}").json()["status"] == "queued":
        assert time.monotonic() - canceled_at < 2, "the canceled job still holds the worker"
        time.sleep(0.01)
    assert wait(api, after["id"])["status"] == "succeeded"
    reader.join(10)
    assert [name for name, _ in events][-1] == "canceled"
    ended = api.get(f"/v1/jobs/{job['id']}").json()
    assert ended["status"] == "canceled" and ended["progress"]["step"] < 150


def test_cancel_of_an_ended_or_unknown_job(api: httpx.Client) -> None:
    done = wait(api, submit(api, type="txt2img", prompt="done", **FAST)["id"])
    response = api.delete(f"/v1/jobs/{done['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_cancelable"
    assert api.delete("/v1/jobs/j_" + "c" * 22).status_code == 404


def test_progress_carries_an_eta_while_running(api: httpx.Client) -> None:
    job = submit(api, type="txt2img", prompt="eta", width=256, height=256, steps=30)
    etas = []
    while True:
        current = api.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] == "running" and current["progress"]["step"] > 0:
            etas.append(current["progress"]["eta_s"])
        if current["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert etas and all(isinstance(e, (int, float)) and e >= 0 for e in etas)
    assert current["progress"]["eta_s"] is None


def test_idempotency_key_returns_the_first_job(api: httpx.Client) -> None:
    key = f"retry-{time.time_ns()}"
    body = {"type": "txt2img", "prompt": "only once", **FAST}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # Another key, or none, is another job.
    other = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key + "-2"})
    plain = api.post("/v1/jobs", json=body)
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    # The key now stands for that request: a different body under it is refused.
    changed = api.post(
        "/v1/jobs", json={**body, "prompt": "something else"}, headers={"Idempotency-Key": key}
    )
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    # Once finished, a replay with Prefer: wait returns the finished job at once.
    wait(api, first.json()["id"])
    replay = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key, "Prefer": "wait=10"})
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]


def test_concurrent_submits_with_one_key_make_one_job(api: httpx.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"race-{time.time_ns()}"
    body = {"type": "txt2img", "prompt": "raced", **FAST}

    def post(_: int) -> str:
        response = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(post, range(8)))
    assert len(ids) == 1


def test_bad_idempotency_key(api: httpx.Client) -> None:
    response = api.post(
        "/v1/jobs", json={"type": "txt2img", "prompt": "x"}, headers={"Idempotency-Key": "k" * 300}
    )
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "Idempotency-Key"


def test_cancel_racing_the_worker_never_fails(api: httpx.Client) -> None:
    """Cancel right after submit, while the idle worker is taking the job off the queue."""
    outcomes = []
    for _ in range(60):
        job = submit(api, type="txt2img", prompt="raced", steps=2)
        response = api.delete(f"/v1/jobs/{job['id']}")
        assert response.status_code in (200, 409), response.text
        outcomes.append(response.status_code)
        ended = wait(api, job["id"])
        assert ended["status"] in ("canceled", "succeeded")
        assert (ended["status"] == "canceled") == (response.status_code == 200)
    assert 200 in outcomes
