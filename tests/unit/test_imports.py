"""The import arrows: app → jobs ← worker. Checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {line.split(".")[0] for line in out.stdout.splitlines()}


def test_app_loads_no_torch_and_no_worker() -> None:
    loaded = modules_after("import app.main; app.main.create_app")
    assert "fastapi" in loaded  # the check itself works
    assert not {"torch", "diffusers", "transformers", "worker"} & loaded


@pytest.mark.parametrize("module", ["worker.main", "worker.runner", "worker.pipelines"])
def test_worker_loads_no_fastapi_and_no_app(module: str) -> None:
    loaded = modules_after(f"import {module}")
    assert "jobs" in loaded
    assert not {"fastapi", "starlette", "app", "uvicorn"} & loaded


def test_jobs_loads_neither() -> None:
    loaded = modules_after(
        "import jobs.protocol, jobs.catalog, jobs.records, jobs.queueing, jobs.storage, "
        "jobs.images, jobs.settings"
    )
    assert "pydantic" in loaded
    assert not {"fastapi", "starlette", "torch", "app", "worker"} & loaded
