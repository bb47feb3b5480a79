"""Webhooks delivered to a real receiver on loopback, signed, retried, never redirected."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from bench.procs import free_port
from latentq_client import verify_webhook
from tests.conftest import WEBHOOK_SECRET
from tests.integration.helpers import submit, wait

FAST = {"steps": 3, "guidance_scale": 5.0}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    requests: list[Received] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    """path → how many requests to that path answer 500 before the rest answer 204."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.on(path)) >= count:
                return self.on(path)
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.on(path))} of {count} deliveries arrived")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            if self.path.startswith("/redirect"):
                self.send_response(307)
                self.send_header("Location", state.url("/elsewhere"))
            elif state.fail_first.get(self.path, 0) > 0:
                state.fail_first[self.path] -= 1
                self.send_response(500)
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


def check_signature(delivery: Received) -> None:
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["webhook-signature"].startswith("v1=")
    assert verify_webhook(WEBHOOK_SECRET, delivery.headers, delivery.body)
    assert not verify_webhook(b"another secret entirely", delivery.headers, delivery.body)
    assert not verify_webhook(WEBHOOK_SECRET, delivery.headers, delivery.body + b" ")
    stale = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 301)}
    assert not verify_webhook(WEBHOOK_SECRET, stale, delivery.body)


def test_start_and_completed_are_delivered_signed(api: httpx.Client, receiver: Receiver) -> None:
    job = submit(
        api,
        type="txt2img",
        prompt="hooked",
        webhook=receiver.url("/hook"),
        webhook_events=["start", "completed"],
        **FAST,
    )
    assert job["params"]["webhook_events"] == ["start", "completed"]
    deliveries = receiver.wait_for("/hook", 2)
    time.sleep(0.3)
    assert len(receiver.on("/hook")) == 2
    by_event = {d.json["event"]: d for d in deliveries}
    assert set(by_event) == {"start", "completed"}
    for event, delivery in by_event.items():
        check_signature(delivery)
        headers = {k.lower(): v for k, v in delivery.headers.items()}
        assert headers["webhook-event"] == event and headers["webhook-id"].startswith("wh_")
        assert headers["content-type"] == "application/json"
        assert delivery.json["job"]["id"] == job["id"]
        # Receivers are not the operator: no worker host or PID.
        assert delivery.json["job"]["worker"] is None
    assert by_event["start"].json["job"]["status"] == "running"
    completed = by_event["completed"].json["job"]
    assert completed["status"] == "succeeded" and completed["result"]["images"]


def test_completed_is_the_default_and_progress_is_opt_in(
    api: httpx.Client, receiver: Receiver
) -> None:
    submit(api, type="txt2img", prompt="default", webhook=receiver.url("/default"), **FAST)
    job = submit(
        api,
        type="txt2img",
        prompt="progress",
        width=256,
        height=256,
        steps=12,
        webhook=receiver.url("/progress"),
        webhook_events=["progress", "completed"],
    )
    assert [d.json["event"] for d in receiver.wait_for("/default", 1)] == ["completed"]
    wait(api, job["id"])
    deliveries = receiver.wait_for("/progress", 2)
    time.sleep(0.5)
    events = [d.json["event"] for d in receiver.on("/progress")]
    assert events.count("completed") == 1 and events.count("progress") >= 1
    progress = [d.json for d in receiver.on("/progress") if d.json["event"] == "progress"]
    assert all(p["job_id"] == job["id"] and 0 < p["progress"]["step"] <= 12 for p in progress)
    assert deliveries


def test_failed_deliveries_are_retried(api: httpx.Client, receiver: Receiver) -> None:
    receiver.fail_first["/flaky"] = 2
    job = submit(api, type="txt2img", prompt="flaky", webhook=receiver.url("/flaky"), **FAST)
    deliveries = receiver.wait_for("/flaky", 3)
    assert [d.json["job"]["id"] for d in deliveries] == [job["id"]] * 3
    ids = {d.headers["Webhook-Id"] for d in deliveries}
    assert len(ids) == 1  # the same delivery, tried again
    for delivery in deliveries:
        check_signature(delivery)


def test_redirects_are_not_followed(api: httpx.Client, receiver: Receiver) -> None:
    submit(api, type="txt2img", prompt="bounced", webhook=receiver.url("/redirect"), **FAST)
    receiver.wait_for("/redirect", 2)
    assert receiver.on("/elsewhere") == []


def test_a_dead_webhook_never_fails_the_job(api: httpx.Client) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    job = submit(
        api,
        type="txt2img",
        prompt="unheard",
        webhook=dead,
        webhook_events=["start", "progress", "completed"],
        **FAST,
    )
    assert wait(api, job["id"])["status"] == "succeeded"
    after = wait(api, submit(api, type="txt2img", prompt="next", **FAST)["id"])
    assert after["status"] == "succeeded"


def test_cancel_sends_completed(api: httpx.Client, receiver: Receiver) -> None:
    blocker = submit(api, type="txt2img", prompt="blocker", width=256, height=256, steps=30)
    job = submit(api, type="txt2img", prompt="canceled", webhook=receiver.url("/canceled"), **FAST)
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 200
    delivery = receiver.wait_for("/canceled", 1)[0]
    assert delivery.json["event"] == "completed"
    assert delivery.json["job"]["status"] == "canceled"
    wait(api, blocker["id"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"webhook": "http://user:pw@example.com/hook"}, "webhook"),
        ({"webhook": "http://no-such-host.invalid/hook"}, "webhook"),
        ({"webhook_events": ["completed"]}, None),
        ({"webhook": "http://127.0.0.1/h", "webhook_events": ["finished"]}, "webhook_events.0"),
    ],
)
def test_bad_webhooks_are_refused(
    api: httpx.Client, body: dict[str, Any], param: str | None
) -> None:
    response = api.post("/v1/jobs", json={"type": "txt2img", "prompt": "x", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param
