"""Secrets never reach the logs: the API and a worker started against a Redis that needs a
password name it in their logs without the password."""

from __future__ import annotations

from pathlib import Path

from bench.procs import Fleet, free_port
from tests.integration.services import Service, service_env, write_catalog

PASSWORD = "redis-password-that-must-not-be-logged"


def test_the_redis_password_is_not_logged(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    server = Fleet(tmp_path, {}, detach=False).start_redis(
        url,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--requirepass",
        PASSWORD,
        "--dir",
        str(tmp_path),
        name="redis-with-password",
        timeout=10,
    )
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    env = service_env(url, tmp_path / "data", catalog, LATENTQ_LOG_LEVEL="DEBUG")
    service = Service(redis=None, workdir=tmp_path, env=env)  # type: ignore[arg-type]
    try:
        service.start_worker("secretive")
        service.start_api()
        service.wait_for_workers("tiny", 1)
        logs = {p.name: p.log.read_text() for p in service.processes}
        assert "redis://:***@127.0.0.1" in logs["api"], logs["api"][-2000:]
        for name, text in logs.items():
            assert PASSWORD not in text, f"{name} logged the Redis password"
    finally:
        service.stop()
        server.stop()
