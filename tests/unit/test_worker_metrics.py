"""Where a worker serves its metrics: loopback unless told otherwise (the deployments that
are scraped from elsewhere say so: tests/deploy)."""

from __future__ import annotations

import httpx
import pytest

from worker import metrics
from worker.settings import WorkerSettings


def test_metrics_bind_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTQ_METRICS_HOST", raising=False)
    settings = WorkerSettings()
    assert settings.metrics_host == "127.0.0.1"
    server = metrics.serve(0, settings.metrics_host)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_address_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTQ_METRICS_HOST", "0.0.0.0")
    assert WorkerSettings().metrics_host == "0.0.0.0"
    import inspect

    assert inspect.signature(metrics.serve).parameters["host"].default == "127.0.0.1"
