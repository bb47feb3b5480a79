"""Small client helpers for the integration tests."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import numpy as np
from PIL import Image


def submit(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job: dict[str, Any] = response.json()
    return job


def wait(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not end in {timeout}s")


def run(api: httpx.Client, **body: Any) -> dict[str, Any]:
    job = wait(api, submit(api, **body)["id"])
    assert job["status"] == "succeeded", job
    return job


def fetch(api: httpx.Client, url: str) -> tuple[Image.Image, httpx.Response]:
    response = api.get(url)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)), response


def pixels(api: httpx.Client, job: dict[str, Any], index: int = 0) -> np.ndarray:
    image, _ = fetch(api, job["result"]["images"][index]["url"])
    return np.asarray(image.convert("RGB")).astype(np.int16)


def sse_events(api: httpx.Client, path: str, timeout: float = 60) -> list[tuple[str, Any]]:
    """Read a whole SSE stream: (event name, parsed data) per event, until the server closes."""
    import json

    events: list[tuple[str, Any]] = []
    name, data = "message", []
    with api.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if data:
                    events.append((name, json.loads("\n".join(data))))
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
    return events
