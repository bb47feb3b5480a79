"""Secrets never reach the logs: the API and a worker started against a Redis that needs a
password name it in their logs without the password."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from tests.integration.services import (
    Service,
    free_port,
    service_env,
    spawn,
    start_api,
    wait_for,
    write_catalog,
)

PASSWORD = "redis-password-that-must-not-be-logged"


def test_the_redis_password_is_not_logged(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (make test installs it)"
    server = spawn(
        "redis-with-password",
        [
            binary,
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
        ],
        {},
        tmp_path,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(lambda: bool(client.ping()), 10, "redis-server", server.proc, server.log)
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    env = service_env(url, tmp_path / "data", catalog, LATENTQ_LOG_LEVEL="DEBUG")
    service = Service(redis=None, workdir=tmp_path, env=env)  # type: ignore[arg-type]
    try:
        service.start_worker("secretive")
        api, base_url = start_api(env, tmp_path)
        service.processes.append(api)
        service.api_port = int(base_url.rsplit(":", 1)[1])
        service.wait_for_workers("tiny", 1)
        logs = {p.name: p.log.read_text() for p in service.processes}
        assert "redis://:***@127.0.0.1" in logs["api"], logs["api"][-2000:]
        for name, text in logs.items():
            assert PASSWORD not in text, f"{name} logged the Redis password"
    finally:
        service.stop()
        server.stop()
        client.close()
