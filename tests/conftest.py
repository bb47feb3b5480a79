"""Fixtures shared by every test: the tiny model, built once per session, and the running
service (a real redis-server, a worker process and the API), started when a test asks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import free_port
from tests.integration.services import RedisServer, Service, service_env, write_catalog

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD-1.x pipeline with random weights, saved in diffusers format."""
    from worker.demo_model import build

    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    build("sd1", path)
    return path


# -- the running service, shared by the integration and browser tests -----------------

WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service(
    redis_server: RedisServer, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One worker serving the tiny models, and the API."""
    workdir = tmp_path_factory.mktemp("service")
    catalog = write_catalog(workdir / "models.toml", tiny_model)
    env = service_env(
        redis_server.url,
        workdir / "data",
        catalog,
        # The webhook tests deliver to a receiver on loopback, quickly retried.
        LATENTQ_WEBHOOK_ALLOW_PRIVATE="true",
        LATENTQ_WEBHOOK_BACKOFF_S="0.3",
        LATENTQ_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    svc = Service(redis=redis_server, workdir=workdir, env=env)
    try:
        svc.start_worker("worker-1", LATENTQ_METRICS_PORT=str(free_port()))
        svc.start_api()
        svc.wait_for_workers("tiny", 1)
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def api(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        yield client
