"""The compose stack, started for real: nginx -> 2 API replicas -> Redis <- 2 workers on the
tiny demo model, S3 storage (moto's server standing in for MinIO), Prometheus.

docker-compose.yml with tests/containers/docker-compose.test.yml on top (images from Debian's
packages where no registry can give them; ports published on 127.0.0.1 only; the network's
range fixed). Every request goes to 127.0.0.1: through nginx, to the S3 stand-in for result
URLs, to Prometheus. The tests run in order on one stack: what each leaves (a killed worker
back, a third worker) is what the next starts from.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from PIL import Image

from app.auth import hash_key
from bench.procs import free_port
from jobs import keys
from tests.containers.conftest import BuiltImages
from tests.containers.engine import ROOT, WORKDIR, docker, ensure_test_image, run_tool
from tests.deploy.helpers import compose_binary
from tests.images import png_b64, solid

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT_FILES = ["docker-compose.yml", "tests/containers/docker-compose.test.yml"]
WITH_SENTINELS = ["docker-compose.yml", "docker-compose.sentinel.yml", ROOT_FILES[1]]
PROJECT = "latentq-test"
SUBNET = "10.202.250.0/24"
IP_RANGE = "10.202.250.128/25"
STAND_INS = {
    "redis": "latentq-test/redis:bookworm",
    "nginx": "latentq-test/nginx:bookworm",
    "prometheus": "latentq-test/prometheus:bookworm",
    "s3": "latentq-test/s3:bookworm",
}


@dataclass
class Stack:
    env: dict[str, str]
    http: str
    prometheus: str
    s3: str
    key: str
    files: list[str] = field(default_factory=lambda: list(ROOT_FILES))
    figures: dict[str, Any] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = [arg for f in self.files for arg in ("-f", f)]
        return run_tool(
            "docker compose",
            [compose_binary(), "-p", PROJECT, *files],
            args,
            cwd=ROOT,
            env=self.env,
            timeout=timeout,
            check=check,
        )

    def client(self, timeout: float = 90) -> httpx.Client:
        return httpx.Client(
            base_url=self.http, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"}
        )

    def containers(self, service: str, stopped: bool = False) -> list[str]:
        return self.compose("ps", *(["-a"] if stopped else []), "-q", service).stdout.split()

    def hostname(self, container: str) -> str:
        return docker("inspect", "--format", "{{.Config.Hostname}}", container).stdout.strip()

    def live_workers(self) -> int:
        """Live workers holding the model warm, as the API reports them."""
        with self.client() as api:
            (model,) = api.get("/v1/models").json()["data"]
        return int(model["workers"])

    def wait_for_workers(self, count: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                seen = self.live_workers()
            except (httpx.HTTPError, KeyError, ValueError):
                seen = 0
            if seen >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} workers not live after {timeout}s: {seen}")


def submit(stack: Stack, body: dict[str, Any], wait: int = 0) -> dict[str, Any]:
    headers = {"Prefer": f"wait={wait}"} if wait else {}
    with stack.client() as api:
        response = api.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for_job(
    stack: Stack, job_id: str, until: set[str], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with stack.client() as api:
        while time.monotonic() < deadline:
            job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not {until} after {timeout}s: {job['status']}")


LONG_JOB = {"type": "txt2img", "prompt": "a long one", "width": 256, "height": 256, "steps": 30}
# Longer: `docker compose stop` stops nginx and the API replicas before the workers.
DRAIN_JOB = {**LONG_JOB, "width": 512, "height": 512, "steps": 50}


@pytest.fixture(scope="module")
def stack(images: BuiltImages) -> Iterator[Stack]:
    for target, tag in STAND_INS.items():
        ensure_test_image(target, tag)
    key = "lq_" + secrets.token_urlsafe(24)
    ports = {name: free_port() for name in ("http", "prometheus", "s3")}
    env = {
        **os.environ,
        "LATENTQ_API_IMAGE": images.api,
        "LATENTQ_WORKER_IMAGE": images.worker,
        # An operator key (admin): the tests read which worker ran a job.
        "LATENTQ_TEST_API_KEYS": f"tests:{hash_key(key)}:admin",
        "LATENTQ_TEST_SIGNING_SECRET": secrets.token_hex(32),
        "LATENTQ_TEST_WEBHOOK_SECRET": secrets.token_hex(32),
        "LATENTQ_TEST_HTTP_PORT": str(ports["http"]),
        "LATENTQ_TEST_PROMETHEUS_PORT": str(ports["prometheus"]),
        "LATENTQ_TEST_S3_PORT": str(ports["s3"]),
        "LATENTQ_TEST_SUBNET": SUBNET,
        # The stack's own required settings: MinIO's secrets (the S3 stand-in takes any) and
        # nginx's fixed address, inside the test's subnet.
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
        "MINIO_LATENTQ_PASSWORD": secrets.token_urlsafe(24),
        "LATENTQ_SUBNET": SUBNET,
        "LATENTQ_IP_RANGE": IP_RANGE,
        "LATENTQ_PROXY_ADDRESS": SUBNET.rsplit(".", 1)[0] + ".10",
    }
    stack = Stack(
        env=env,
        http=f"http://127.0.0.1:{ports['http']}",
        prometheus=f"http://127.0.0.1:{ports['prometheus']}",
        s3=f"http://127.0.0.1:{ports['s3']}",
        key=key,
    )
    # The image of the replica and the Sentinels of docker-compose.sentinel.yml.
    stack.env["LATENTQ_REDIS_IMAGE"] = STAND_INS["redis"]
    stack.env["LATENTQ_TEST_IP_RANGE"] = IP_RANGE
    stack.compose("down", "--volumes", "--remove-orphans")
    try:
        started = time.monotonic()
        stack.compose("up", "--detach", "--no-build")
        stack.figures["compose_up_s"] = round(time.monotonic() - started, 1)
        job = submit(stack, {"type": "txt2img", "prompt": "first", "steps": 4}, wait=0)
        job = wait_for_job(stack, job["id"], {"succeeded", "failed"}, timeout=300)
        assert job["status"] == "succeeded", job
        stack.figures["up_to_first_job_s"] = round(time.monotonic() - started, 1)
        yield stack
    finally:
        WORKDIR.mkdir(parents=True, exist_ok=True)
        try:
            logs = stack.compose("logs", "--no-color", "--tail", "200", timeout=120).stdout
            (WORKDIR / "stack.log").write_text(logs)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
        print(f"\nstack figures: {stack.figures}")


def test_every_job_type_through_nginx(stack: Stack) -> None:
    with stack.client() as api:
        (model,) = api.get("/v1/models").json()["data"]
    image = png_b64(solid((200, 40, 40), (128, 128)))
    mask = png_b64(solid((255, 255, 255), (128, 128)))
    bodies = {
        "txt2img": {"width": 128, "height": 128},
        "img2img": {"image": image, "strength": 0.5},
        "inpaint": {"image": image, "mask": mask},
        "outpaint": {"image": image, "outpaint": {"left": 32, "right": 32}},
    }
    assert set(model["tasks"]) <= set(bodies), model["tasks"]
    for task in model["tasks"]:
        body = {"type": task, "prompt": f"a {task}", "steps": 4, **bodies[task]}
        job = submit(stack, body, wait=60)
        assert job["status"] == "succeeded", job
        (result,) = job["result"]["images"]
        # Result URLs are presigned for the S3 stand-in's published port, on loopback.
        assert result["url"].startswith(stack.s3 + "/"), result["url"]
        fetched = httpx.get(result["url"], timeout=30)
        assert fetched.status_code == 200, fetched.text[:300]
        assert fetched.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(fetched.content)).size == (result["width"], result["height"])
    # The OpenAI-compatible route, through nginx's long-wait location.
    with stack.client() as api:
        answer = api.post(
            "/v1/images/generations",
            json={"prompt": "openai", "size": "64x64", "response_format": "b64_json"},
        )
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["data"][0]["b64_json"])[:4] == b"\x89PNG"
    # Both API replicas answered: nginx spreads requests over them.
    access = stack.compose("logs", "--no-color", "nginx").stdout
    upstreams = {part.split("/")[0] for part in access.split("upstream=")[1:]}
    assert len({u for u in upstreams if u.endswith(":8000")}) == 2, upstreams


def test_prometheus_scrapes_both_apis_and_the_workers(stack: Stack) -> None:
    deadline = time.monotonic() + 90
    up: dict[str, int] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()
        up = {}
        for target in targets["data"]["activeTargets"]:
            if target["health"] == "up":
                up[target["labels"]["job"]] = up.get(target["labels"]["job"], 0) + 1
        if up.get("latentq-api") == 2 and up.get("latentq-worker") == 2:
            break
        time.sleep(2)
    assert up.get("latentq-api") == 2 and up.get("latentq-worker") == 2, up
    # What they scrape is the service's own: each worker reports its model warm.
    query = {"query": "count(latentq_worker_warm_models == 1)"}
    warm: list[Any] = []
    while time.monotonic() < deadline + 30:
        reply = httpx.get(f"{stack.prometheus}/api/v1/query", params=query, timeout=10).json()
        warm = reply["data"]["result"]
        if warm and warm[0]["value"][1] == "2":
            break
        time.sleep(2)
    assert warm and warm[0]["value"][1] == "2", warm


def test_killed_worker_job_finishes_on_the_other_and_it_is_restarted(stack: Stack) -> None:
    job = submit(stack, LONG_JOB)
    running = wait_for_job(stack, job["id"], {"running", "succeeded"})
    assert running["status"] == "running", "the job ended before the worker could be killed"
    victim_name = running["worker"]
    containers = {stack.hostname(c): c for c in stack.containers("worker")}
    victim = containers[victim_name.split(".")[0]]
    # SIGKILL to the worker process from outside, as the kernel's OOM killer would: Docker
    # sees the container die and its restart policy applies. (`docker kill` would not do:
    # Docker counts it as a manual stop, which no restart policy restarts.)
    pid = docker("inspect", "--format", "{{.State.Pid}}", victim).stdout.strip()
    killed_at = time.monotonic()
    os.kill(int(pid), signal.SIGKILL)
    done = wait_for_job(stack, job["id"], {"succeeded", "failed"}, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["worker"] != victim_name, "the job ran again on the other worker"
    assert done["attempts"] == 1, "one worker lost while running it"
    stack.figures["killed_job_done_after_s"] = round(time.monotonic() - killed_at, 1)
    # The restart policy brings the killed container back, and its worker goes live again.
    state = docker("inspect", "--format", "{{.RestartCount}} {{.State.Running}}", victim).stdout
    restarts, running_now = state.split()
    assert int(restarts) >= 1 and running_now == "true", state
    stack.wait_for_workers(2)
    stack.figures["killed_worker_live_again_after_s"] = round(time.monotonic() - killed_at, 1)
    stack.figures["killed_worker_restarts"] = int(restarts)


def test_scale_up_adds_a_worker_that_takes_jobs(stack: Stack) -> None:
    before = set(stack.containers("worker"))
    stack.compose("up", "--detach", "--no-build", "--no-recreate", "--scale", "worker=3")
    after = set(stack.containers("worker"))
    assert before < after and len(after) == 3, "the two workers stay, a third is added"
    (new,) = after - before
    new_host = stack.hostname(new)
    started = time.monotonic()
    stack.wait_for_workers(3)
    stack.figures["third_worker_live_after_s"] = round(time.monotonic() - started, 1)
    # Enough jobs at once that three workers share them (each takes the next one it can).
    ran_on: dict[str, int] = {}
    for _ in range(4):
        batch = [
            submit(
                stack,
                {"type": "txt2img", "prompt": "scale", "steps": 8, "width": 256, "height": 256},
            )  # fmt: skip
            for _ in range(6)
        ]
        for job in batch:
            done = wait_for_job(stack, job["id"], {"succeeded", "failed"})
            assert done["status"] == "succeeded", done
            host = done["worker"].split(".")[0]
            ran_on[host] = ran_on.get(host, 0) + 1
        if ran_on.get(new_host):
            break
    assert ran_on.get(new_host), f"the new worker took no job: {ran_on}"
    stack.figures["scaled_jobs_per_worker"] = sorted(ran_on.values(), reverse=True)


def test_file_urls_through_nginx_with_local_storage(stack: Stack) -> None:
    """The same stack with images on the shared volume: file URLs are the API's signed
    /v1/files, fetched through nginx."""
    stack.env["LATENTQ_STORAGE"] = "local"
    stack.compose("up", "--detach", "--no-build")
    stack.wait_for_workers(2)
    body = {"type": "txt2img", "prompt": "local", "steps": 4, "width": 64, "height": 64}
    job = submit(stack, body, wait=60)
    assert job["status"] == "succeeded", job
    url = job["result"]["images"][0]["url"]
    assert url.startswith(f"{stack.http}/v1/files/"), url
    with stack.client() as api:
        # With API keys, a job's files are its owner's: the key goes with the signed URL.
        fetched = api.get(url)
        tampered = api.get(url.replace("sig=", "sig=0"))
    assert fetched.status_code == 200, fetched.text[:300]
    assert fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    assert tampered.status_code in (403, 404), tampered.status_code


def test_compose_stop_drains_the_running_job(stack: Stack) -> None:
    job = submit(stack, DRAIN_JOB)
    running = wait_for_job(stack, job["id"], {"running", "succeeded"})
    assert running["status"] == "running"
    runner = running["worker"].split(".")[0]
    started = time.monotonic()
    stack.compose("stop", timeout=300)
    stack.figures["compose_stop_s"] = round(time.monotonic() - started, 1)
    workers = {stack.hostname(c): c for c in stack.containers("worker", stopped=True)}
    assert len(workers) == 2
    for container in workers.values():
        code = docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        assert code == "0", f"worker {container} exited {code}"
    # The worker running the job was told to stop while the job ran, and let it finish.
    logs = docker("logs", workers[runner])
    told = [
        json.loads(line)["ts"]
        for line in (logs.stdout + logs.stderr).splitlines()
        if line.startswith("{") and "stopping: the running job has" in line
    ]
    assert told, "the worker logged its drain"
    # Redis stopped last, after the workers; its data tells how the job ended.
    stack.compose("start", "redis")
    deadline = time.monotonic() + 30
    fields: list[Any] = []
    while time.monotonic() < deadline:
        get = ("exec", "-T", "redis", "redis-cli", "--no-raw", "HMGET", keys.job(job["id"]))
        result = stack.compose(*get, "status", "finished_at", timeout=30, check=False)
        if result.returncode == 0 and '"' in result.stdout:
            # redis-cli --no-raw quotes each reply; the record's fields are JSON themselves.
            fields = [json.loads(json.loads(line.split(") ", 1)[1]))
                      for line in result.stdout.splitlines()]  # fmt: skip
            break
        time.sleep(1)
    assert fields and fields[0] == "succeeded", f"the drained job: {fields}"
    assert datetime.fromisoformat(fields[1]) > datetime.fromisoformat(told[-1]), (
        "the job ended after the stop signal"
    )


def sentinel_says(stack: Stack, *command: str) -> list[str]:
    """A command to sentinel-1, its reply as lines (redis-cli prints raw replies to a pipe)."""
    ask = ("exec", "-T", "sentinel-1", "redis-cli", "-p", "26379", "SENTINEL", *command)
    return stack.compose(*ask, check=False).stdout.split()


def test_sentinel_override_survives_losing_the_primary(stack: Stack) -> None:
    """docker-compose.sentinel.yml on the same stack: a replica and three Sentinels; the
    primary's container is killed, the replica takes over, and jobs go on through nginx."""
    stack.files = list(WITH_SENTINELS)
    stack.env["LATENTQ_STORAGE"] = "local"
    stack.compose("up", "--detach", "--no-build")
    stack.wait_for_workers(2)
    body = {"type": "txt2img", "prompt": "sentinel", "steps": 4, "width": 64, "height": 64}
    assert submit(stack, body, wait=60)["status"] == "succeeded"
    assert sentinel_says(stack, "get-master-addr-by-name", "latentq")[:1] == ["redis"]
    deadline = time.monotonic() + 60
    while True:
        state = sentinel_says(stack, "master", "latentq")
        fields = dict(zip(state[::2], state[1::2], strict=False))
        if fields.get("num-slaves", "0") != "0" and fields.get("num-other-sentinels") == "2":
            break
        assert time.monotonic() < deadline, f"the Sentinels do not see the replica: {fields}"
        time.sleep(1)
    (primary,) = stack.containers("redis")
    killed_at = time.monotonic()
    docker("kill", primary)
    while sentinel_says(stack, "get-master-addr-by-name", "latentq")[:1] != ["redis-replica"]:
        assert time.monotonic() < killed_at + 90, "the Sentinels did not promote the replica"
        time.sleep(0.5)
    stack.figures["sentinel_promoted_after_s"] = round(time.monotonic() - killed_at, 1)
    while True:
        with stack.client() as api:
            answer = api.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})
        if answer.status_code in (200, 202):
            break
        # Until the API's connections have moved to the new primary: 503, and nothing else.
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < killed_at + 120, "no submit accepted after the failover"
        time.sleep(0.5)
    job = wait_for_job(stack, answer.json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    stack.figures["sentinel_first_job_after_kill_s"] = round(time.monotonic() - killed_at, 1)
