"""Two API replicas behind the shipped nginx config, one worker, one Redis, all real processes
on the loopback.

Through the load balancer: submits are spread over both replicas; a job submitted through it
reads the same through either replica and through nginx; its event stream, read through nginx,
delivers each progress event as it happens (not held back until the end) and one final event;
a cancel through one replica ends the stream another replica serves through nginx; `Prefer:
wait` works; and result URLs (`LATENTQ_PUBLIC_URL` is nginx) serve the PNGs through nginx.

The nginx config is deploy/nginx/nginx.conf itself, with only what a loopback test must change
substituted: the API upstream (Docker DNS there, the two replicas' ports here), the listen
address, the log and temp paths, and one response header naming the replica that answered.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Proc, answers, free_port, spawn, wait_for, workers_serving
from tests.deploy.helpers import DEPLOY, tool
from tests.integration.helpers import wait
from tests.integration.services import QUIET, RedisServer, Service, service_env, write_catalog

pytestmark = pytest.mark.integration

CONF = DEPLOY / "nginx" / "nginx.conf"
UPSTREAM_HEADER = "X-Test-Upstream"
"""Added to the test's config: `$upstream_addr` of every proxied response, so a test knows
which replica serves an open event stream."""

FINAL = ("succeeded", "failed", "canceled")
SMALL = {"type": "txt2img", "prompt": "balanced", "width": 64, "height": 64, "steps": 2}
STREAMED_STEPS = 40
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- the cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    nginx: str
    """Base URL of the load balancer (also the service's LATENTQ_PUBLIC_URL)."""
    replicas: dict[str, str]
    """`127.0.0.1:PORT` (as nginx's `$upstream_addr` names it) -> the replica's own base URL."""
    access_log: Path
    service: Service

    def replica(self, upstream_addr: str) -> str:
        assert upstream_addr in self.replicas, (upstream_addr, self.replicas)
        return self.replicas[upstream_addr]

    def other_replica(self, upstream_addr: str) -> str:
        self.replica(upstream_addr)
        (other,) = [url for addr, url in self.replicas.items() if addr != upstream_addr]
        return other


def nginx_config(prefix: Path, port: int, upstreams: list[str]) -> str:
    """deploy/nginx/nginx.conf adapted to the loopback: every substitution must match exactly
    once, so a reshaped production config fails here instead of being silently not tested."""
    servers = "".join(f"        server {addr};\n" for addr in upstreams)
    temp = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    substitutions = {
        # The container's log streams -> files of this test.
        "error_log /dev/stderr ": f"error_log {prefix}/error.log ",
        "access_log /dev/stdout ": f"access_log {prefix}/access.log ",
        # Docker DNS resolves `api` to every replica; here a static group of the two replicas
        # (a variable proxy_pass looks up upstream groups by name before any resolver).
        "set $latentq_api http://api:8000;": "set $latentq_api http://latentq_api;",
        "http {\n": "http {\n" + temp + "    upstream latentq_api {\n" + servers + "    }\n",
        "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
        "server_name _;\n": f"server_name _;\n        add_header {UPSTREAM_HEADER} $upstream_addr"
        " always;\n",
    }
    text = CONF.read_text()
    for old, new in substitutions.items():
        assert text.count(old) == 1, f"{CONF} no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


def start_nginx(prefix: Path, port: int, upstreams: list[str]) -> Proc:
    """nginx in the foreground as one process (under root a master hands requests to workers
    running as `nobody`, which may not reach the temp paths inside pytest's private tmp dir).
    Not yet ready when this returns: see `wait_for_nginx`."""
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, upstreams))
    settings = f"daemon off; master_process off; pid {prefix}/nginx.pid;"
    args = [tool("nginx"), "-p", str(prefix), "-c", str(conf), "-g", settings]
    return spawn("nginx", args, dict(os.environ), prefix)


def wait_for_nginx(process: Proc, url: str) -> None:
    wait_for(answers(f"{url}/nginx-health"), 15, "nginx", process)


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("load-balanced")
    (workdir / "redis").mkdir()
    (workdir / "nginx").mkdir()
    redis_server = RedisServer(free_port(), workdir / "redis")
    nginx_port = free_port()
    nginx_url = f"http://127.0.0.1:{nginx_port}"
    catalog = write_catalog(workdir / "models.toml", tiny_model)
    env = service_env(redis_server.url, workdir / "data", catalog, LATENTQ_PUBLIC_URL=nginx_url)
    service = Service(redis=redis_server, workdir=workdir, env=env)
    nginx: Proc | None = None
    try:
        redis_server.start()
        worker = service.start_worker("worker-lb", LATENTQ_MODELS="tiny")
        # Both replicas start while the worker loads its model; the service stops them,
        # whatever happens next.
        replicas = [
            service.fleet.start_api(*QUIET, name=name, ready=None) for name in ("api-a", "api-b")
        ]
        for process, url in replicas:
            wait_for(answers(f"{url}/healthz"), 30, process.name, process)
        first = replicas[0][1]
        wait_for(lambda: workers_serving(first, "tiny") >= 1, 120, "the worker", worker)
        upstreams = [url.removeprefix("http://") for _, url in replicas]
        nginx = start_nginx(workdir / "nginx", nginx_port, upstreams)
        wait_for_nginx(nginx, nginx_url)
        yield Cluster(
            nginx=nginx_url,
            replicas={addr: f"http://{addr}" for addr in upstreams},
            access_log=workdir / "nginx" / "access.log",
            service=service,
        )
    finally:
        if nginx is not None:
            nginx.stop(timeout=10)
        service.stop()
        redis_server.stop()


# ---- helpers --------------------------------------------------------------------------------


def submits_answered(replica: str) -> float:
    """This replica's own count of `POST /v1/jobs` answered 202, from its /metrics."""
    text = httpx.get(f"{replica}/metrics", timeout=10).text
    wanted = {"route": "/v1/jobs", "method": "POST", "status": "202"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "latentq_http_requests_total" and wanted.items() <= (
                sample.labels.items()
            ):
                return float(sample.value)
    return 0.0


_LOG_LINE = re.compile(
    r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) .* upstream=(?P<addr>[^/]+)/'
)


def access_log(cluster: Cluster) -> list[dict[str, str]]:
    """nginx's access log: method, path, status and upstream address of every request."""
    lines = cluster.access_log.read_text().splitlines()
    return [m.groupdict() for line in lines if (m := _LOG_LINE.search(line))]


@dataclass
class Event:
    name: str
    data: Any
    at: float
    """time.monotonic() when the event had arrived whole."""


@dataclass
class Stream:
    """An SSE stream read on its own thread; `events` fill in as they arrive."""

    url: str
    upstream: str | None = None
    events: list[Event] = field(default_factory=list)
    first_progress: threading.Event = field(default_factory=threading.Event)
    on_first_progress: Callable[[Event], None] | None = None

    def read(self, timeout: float = 60) -> list[Event]:
        name, data = "message", list[str]()
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("GET", self.url, headers={"Accept": "text/event-stream"}) as response,
        ):
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            self.upstream = response.headers.get(UPSTREAM_HEADER)
            for line in response.iter_lines():
                if line.startswith(":"):  # keep-alive comments
                    continue
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    event = Event(name, json.loads("\n".join(data)), time.monotonic())
                    self.events.append(event)
                    if name == "progress" and not self.first_progress.is_set():
                        if self.on_first_progress is not None:
                            self.on_first_progress(event)
                        self.first_progress.set()
                    name, data = "message", []
        return self.events

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def progress(self) -> list[Event]:
        return [e for e in self.events if e.name == "progress"]


def read_in_background(pool: ThreadPoolExecutor, streams: list[Stream]) -> list[Future[Any]]:
    return [pool.submit(stream.read) for stream in streams]


def check_png(client: httpx.Client, url: str, nginx: str) -> bytes:
    assert url.startswith(f"{nginx}/v1/files/"), f"{url} does not point at the load balancer"
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)
    assert response.headers.get(UPSTREAM_HEADER) is not None, "not answered through nginx"
    return response.content


def ended_stream(stream: Stream, status: str, job_id: str) -> None:
    """Exactly one final event, the last one, named `status`, carrying the whole job."""
    names = stream.names()
    assert [n for n in names if n in FINAL] == [status], (stream.url, names)
    assert names[-1] == status
    final = stream.events[-1].data
    assert final["id"] == job_id and final["status"] == status


# ---- the tests ------------------------------------------------------------------------------


def test_submits_are_spread_and_jobs_read_the_same_everywhere(cluster: Cluster) -> None:
    before = {addr: submits_answered(url) for addr, url in cluster.replicas.items()}
    with httpx.Client(base_url=cluster.nginx, timeout=30) as lb:
        submitted = []
        for _ in range(6):
            response = lb.post("/v1/jobs", json=SMALL)
            assert response.status_code == 202, response.text
            assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
            assert response.headers[UPSTREAM_HEADER] in cluster.replicas
            submitted.append(response.json()["id"])

        # Each replica counted its own share of the submits, and nothing else submitted.
        after = {addr: submits_answered(url) for addr, url in cluster.replicas.items()}
        shares = {addr: after[addr] - before[addr] for addr in cluster.replicas}
        assert sum(shares.values()) == len(submitted), shares
        assert all(share >= 1 for share in shares.values()), shares
        # nginx's own log agrees: the submits went to both upstreams.
        posts = [
            e for e in access_log(cluster) if e["method"] == "POST" and e["path"] == "/v1/jobs"
        ]
        assert {e["addr"] for e in posts[-len(submitted) :]} == set(cluster.replicas)

        # A job submitted through nginx reads the same through either replica and through nginx.
        readers = [httpx.Client(base_url=url, timeout=30) for url in cluster.replicas.values()]
        try:
            for job_id in submitted:
                for reader in [*readers, lb]:
                    response = reader.get(f"/v1/jobs/{job_id}")
                    assert response.status_code == 200, response.text
                    assert response.json()["id"] == job_id
            for job_id in submitted:
                assert wait(lb, job_id, timeout=60)["status"] == "succeeded"
            for job_id in submitted:
                views = [reader.get(f"/v1/jobs/{job_id}").json() for reader in [*readers, lb]]
                assert {v["status"] for v in views} == {"succeeded"}
                urls = [[image["url"] for image in v["result"]["images"]] for v in views]
                paths = {tuple(url.split("?")[0] for url in job_urls) for job_urls in urls}
                assert len(paths) == 1, urls  # the same images, whoever answers
                # Every replica signs result URLs for the load balancer, and nginx serves them.
                for job_urls in urls:
                    for url in job_urls:
                        check_png(lb, url, cluster.nginx)
        finally:
            for reader in readers:
                reader.close()


def test_events_stream_through_nginx_as_they_happen(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.nginx, timeout=30) as lb:
        body = {**SMALL, "width": 256, "height": 256, "steps": STREAMED_STEPS, "prompt": "stream"}
        response = lb.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        path = f"/v1/jobs/{job_id}/events"
        direct = list(cluster.replicas.values())
        # When the first progress event comes out of nginx, the job is still running, with
        # steps to go: nginx passed it on as it happened, not at the end of the stream.
        seen_while: list[dict[str, Any]] = []

        def look_at_the_job(_: Event) -> None:
            seen_while.append(httpx.get(f"{direct[0]}/v1/jobs/{job_id}", timeout=10).json())

        through_nginx = Stream(f"{cluster.nginx}{path}", on_first_progress=look_at_the_job)
        streams = [through_nginx, *(Stream(f"{url}{path}") for url in direct)]
        pool = ThreadPoolExecutor(len(streams))
        try:
            futures = read_in_background(pool, streams)
            for future in futures:
                future.result(timeout=60)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

        for stream in streams:
            ended_stream(stream, "succeeded", job_id)
            progress = stream.progress()
            assert len(progress) >= 5, (stream.url, stream.names())
            steps = [e.data["step"] for e in progress]
            assert steps == sorted(set(steps)), steps  # one by one, in order, none twice
            assert all(e.data["total_steps"] == STREAMED_STEPS for e in progress)
            # The job runs about 2 s on one CPU thread: its progress is spread over that time.
            assert stream.events[-1].at - progress[0].at >= 0.5, "progress came all at once"
        assert through_nginx.upstream in cluster.replicas

        (job_then,) = seen_while
        assert job_then["status"] == "running", job_then
        assert job_then["progress"]["step"] < STREAMED_STEPS
        # Each step reached the client through nginx about when it reached the direct readers.
        arrived = {e.data["step"]: e.at for e in through_nginx.progress()}
        for stream in streams[1:]:
            common = [(arrived[e.data["step"]], e.at) for e in stream.progress()
                      if e.data["step"] in arrived]  # fmt: skip
            assert len(common) >= 3
            # A proxy that held the stream back would be late by about the whole job.
            span = stream.events[-1].at - stream.progress()[0].at
            assert max(abs(a - b) for a, b in common) < max(0.25, span / 5), (span, common)

        # The finished job's image, 256x256, through nginx (a body larger than its buffers).
        (image,) = through_nginx.events[-1].data["result"]["images"]
        assert (image["width"], image["height"]) == (256, 256)
        check_png(lb, image["url"], cluster.nginx)


def test_prefer_wait_through_nginx(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.nginx, timeout=40) as lb:
        started = time.monotonic()
        response = lb.post("/v1/jobs", json=SMALL, headers={"Prefer": "wait=30"})
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 30
        assert response.headers["preference-applied"] == "wait=30"
        job = response.json()
        assert job["status"] == "succeeded" and job["finished_at"]
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        (image,) = job["result"]["images"]
        check_png(lb, image["url"], cluster.nginx)


def test_cancel_through_one_replica_ends_the_stream_another_serves(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.nginx, timeout=30) as lb:
        body = {**SMALL, "width": 256, "height": 256, "steps": 150, "prompt": "canceled"}
        response = lb.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        stream = Stream(f"{cluster.nginx}/v1/jobs/{job_id}/events")
        pool = ThreadPoolExecutor(1)
        try:
            (future,) = read_in_background(pool, [stream])
            assert stream.first_progress.wait(30), f"no progress event: {stream.names()}"
            assert stream.upstream is not None
            serving = cluster.replica(stream.upstream)
            other = cluster.other_replica(stream.upstream)
            assert other != serving

            canceled = httpx.delete(f"{other}/v1/jobs/{job_id}", timeout=10)
            assert canceled.status_code == 200, canceled.text
            assert canceled.json()["status"] == "canceled"
            future.result(timeout=15)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

        ended_stream(stream, "canceled", job_id)
        assert "succeeded" not in stream.names()
        job = lb.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "canceled" and job["progress"]["step"] < 150
        # nginx logged the stream once it closed: served by the replica its header named.
        path = f"/v1/jobs/{job_id}/events"
        wait_for(lambda: any(e["path"] == path for e in access_log(cluster)), 5, "the stream's log")
        (logged,) = [e for e in access_log(cluster) if e["path"] == path]
        assert logged["addr"] == stream.upstream and logged["status"] == "200"
