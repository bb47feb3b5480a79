"""The webhook dispatcher against real receivers on loopback and a real Redis: no receiver,
however slow or endless, holds it up.

Each delivery has a total deadline (not a per-read timeout a trickling receiver can renew
forever), the answer's body is never read, and deliveries run concurrently with a cap per
receiving host, so a slow host delays only its own deliveries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import BaseRequestHandler, ThreadingTCPServer

import pytest
import redis

from app.webhooks import Dispatcher, dispatch_forever
from bench.procs import free_port
from jobs import keys, webhooks
from jobs.settings import Settings
from tests.integration.services import RedisServer

DEADLINE_S = 1.0


@dataclass
class Receiver:
    """A raw HTTP receiver: `behaviour(conn, receiver)` answers each request."""

    host: str
    behaviour: Callable[[socket.socket, Receiver], None]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_now: int = 0
    most_open: int = 0
    answered: int = 0
    closed_by_peer: int = 0
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"


def read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[ThreadingTCPServer, Receiver]] = []

    def make(
        behaviour: Callable[[socket.socket, Receiver], None], host: str = "127.0.0.1"
    ) -> Receiver:
        state = Receiver(host, behaviour)

        class Handler(BaseRequestHandler):
            def handle(self) -> None:
                with state.lock:
                    state.open_now += 1
                    state.most_open = max(state.most_open, state.open_now)
                try:
                    read_request(self.request)
                    state.behaviour(self.request, state)
                except OSError:
                    with state.lock:
                        state.closed_by_peer += 1
                finally:
                    with state.lock:
                        state.open_now -= 1

        ThreadingTCPServer.allow_reuse_address = True
        server = ThreadingTCPServer((host, 0), Handler)
        server.daemon_threads = True
        state.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, state))
        return state

    yield make
    for server, state in servers:
        state.stop.set()
        server.shutdown()
        server.server_close()


def trickle(conn: socket.socket, receiver: Receiver) -> None:
    """Headers one byte at a time, each well within any per-read timeout, never finished."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not receiver.stop.wait(0.2):
        conn.sendall(b"X")


def endless_body(conn: socket.socket, receiver: Receiver) -> None:
    """200 at once, then a body that never ends."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    while not receiver.stop.is_set():
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def slow(hold_s: float) -> Callable[[socket.socket, Receiver], None]:
    def answer(conn: socket.socket, receiver: Receiver) -> None:
        receiver.stop.wait(hold_s)
        conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        with receiver.lock:
            receiver.answered += 1

    return answer


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    """A Redis of this module's own: no API replica's dispatcher takes its deliveries."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("webhook-redis"))
    server.start()
    yield server.client()
    server.stop()


@pytest.fixture
def outbox(connection: redis.Redis) -> webhooks.Outbox:
    connection.flushdb()
    return webhooks.Outbox(connection)


def settings(tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "webhook_secret": "webhook-secret-for-tests-0123456789",
        "webhook_allow_private": True,
        "webhook_timeout_s": DEADLINE_S,
        "webhook_backoff_s": 60,
    }
    return Settings(**{**values, **extra})  # type: ignore[arg-type]


def enqueue(connection: redis.Redis, url: str, job_id: str = "j_test") -> str:
    """A delivery due now, written as a job's move writes one."""
    payload = {"event": "completed", "job": {"id": job_id}}
    delivery = webhooks.Delivery.new(url, "completed", payload, job_id)
    webhooks.Outbox(connection).retry_at(delivery, time.time())
    return delivery.id


def delivery(connection: redis.Redis, delivery_id: str) -> dict[str, object] | None:
    raw = connection.get(keys.webhook(delivery_id))
    return json.loads(raw) if raw else None


def dispatching(
    config: Settings, outbox: webhooks.Outbox, *until: Callable[[], bool], timeout: float
) -> list[float]:
    """Run one dispatcher until every `until()` holds: the seconds each took to come true
    (fails past `timeout`)."""

    async def scenario() -> list[float]:
        dispatcher = Dispatcher(outbox, config)
        task = asyncio.create_task(dispatch_forever(dispatcher))
        start = time.monotonic()
        took: dict[int, float] = {}
        try:
            while len(took) < len(until):
                assert time.monotonic() - start < timeout, f"not done after {timeout}s"
                for i, done in enumerate(until):
                    if i not in took and done():
                        took[i] = time.monotonic() - start
                await asyncio.sleep(0.05)
            return [took[i] for i in range(len(until))]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await dispatcher.close()

    return asyncio.run(scenario())


def test_a_trickling_receiver_gets_a_total_deadline(
    tmp_path: Path, outbox: webhooks.Outbox, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(trickle)
    sent = enqueue(outbox.redis, receiver.url())

    def failed_once() -> bool:
        record = delivery(outbox.redis, sent)
        return record is not None and record["attempts"] == 1

    (took,) = dispatching(settings(tmp_path), outbox, failed_once, timeout=4 * DEADLINE_S + 2)
    assert took < DEADLINE_S + 1.5, f"the attempt ended after {took:.1f}s"
    # Counted as a failure: retried later, not dropped.
    due = outbox.redis.zscore(keys.WEBHOOKS_DUE, sent)
    assert due is not None and due > time.time() + 30


def test_the_answers_body_is_never_read(
    tmp_path: Path, outbox: webhooks.Outbox, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(endless_body)
    sent = enqueue(outbox.redis, receiver.url())
    (took,) = dispatching(
        settings(tmp_path),
        outbox,
        lambda: delivery(outbox.redis, sent) is None,
        timeout=4 * DEADLINE_S + 2,
    )
    assert took < DEADLINE_S, f"delivered after {took:.1f}s"
    assert outbox.redis.zscore(keys.WEBHOOKS_DUE, sent) is None, "a 200 is a delivery"
    deadline = time.monotonic() + 5
    while receiver.closed_by_peer == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.closed_by_peer == 1, "the dispatcher hung up on the endless body"


def test_a_slow_host_delays_only_its_own_deliveries(
    tmp_path: Path, outbox: webhooks.Outbox, receivers: Callable[..., Receiver]
) -> None:
    hold_s = 1.5
    slow_host = receivers(slow(hold_s), host="127.0.0.1")
    fast_host = receivers(slow(0), host="127.0.0.2")
    for i in range(6):
        enqueue(outbox.redis, slow_host.url(), job_id=f"j_slow{i}")
    fast = enqueue(outbox.redis, fast_host.url(), job_id="j_fast")
    config = settings(tmp_path, webhook_timeout_s=10, webhook_per_host=2)
    fast_took, slow_took = dispatching(
        config,
        outbox,
        lambda: delivery(outbox.redis, fast) is None,
        lambda: slow_host.answered == 6 and outbox.redis.zcard(keys.WEBHOOKS_DUE) == 0,
        timeout=30,
    )
    assert fast_took < hold_s, f"the fast host waited {fast_took:.1f}s behind the slow one"
    assert slow_host.most_open == 2, "deliveries to one host run concurrently, at most 2 at once"
    # Three rounds of two: neither one at a time nor all at once.
    assert 3 * hold_s <= slow_took < 6 * hold_s
