"""Schemathesis over the OpenAPI schema: thousands of generated requests, no server error.

A dedicated API replica on its own Redis database with no worker behind it, so that the
jobs the fuzzer submits only queue (up to the queue cap, then 429) instead of running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.services import RedisServer, start_api

pytestmark = pytest.mark.slow

ST = str(Path(sys.executable).with_name("st"))


def test_no_generated_request_gets_a_server_error(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.procs import ROOT

    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "LATENTQ_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/7",
        "LATENTQ_DATA_DIR": str(tmp_path / "data"),
        "LATENTQ_CATALOG": str(ROOT / "models.toml"),
        "LATENTQ_RATE_LIMIT_PER_MIN": "0",
    }
    api, base = start_api(env, tmp_path, "api-fuzz")
    try:
        run = subprocess.run(
            [
                ST,
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "100",
                "--seed",
                "20261130",
                "--report",
                "json",
                "--report-dir",
                str(tmp_path / "report"),
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        report = json.loads(next((tmp_path / "report").glob("*.json")).read_text())
    finally:
        api.stop()
    generated = report["test_cases"]["generated"]
    with capsys.disabled():
        print(
            f"\nschemathesis: {generated} requests generated, {len(report['failures'])} failures, "
            f"{len(report['errors'])} errors"
        )
    assert run.returncode == 0, run.stdout[-4000:]
    assert report["failures"] == [] and report["errors"] == []
    assert generated >= 1000
    log = api.log.read_text()
    assert "Traceback" not in log and "internal_error" not in log, log[-4000:]
