"""Micro-batching against a real worker: compatible queued jobs share one pipeline call, and
each job still gets its own images, progress, cancel and result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.procs import free_port
from tests.integration.helpers import pixels, submit, wait
from tests.integration.services import RedisServer, Service, own_service, service_env, write_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def batching(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A worker that batches up to 8 images of up to 128x128, and the API."""
    workdir = tmp_path_factory.mktemp("batching")
    catalog = write_catalog(workdir / "models.toml", tiny_model)
    with (
        own_service(
            workdir,
            catalog,
            "batcher",
            "tiny",
            LATENTQ_BATCH_MAX="8",
            LATENTQ_BATCH_MAX_PIXELS=str(8 * 128 * 128),
        ) as svc,
        httpx.Client(base_url=svc.base_url, timeout=30) as client,
    ):
        yield client


def blocker(api: httpx.Client) -> dict[str, Any]:
    """A job too big to batch that keeps the worker busy while the test queues others."""
    job = submit(api, type="txt2img", prompt="busy", width=512, height=512, steps=12, seed=1)
    deadline = time.monotonic() + 30
    while (now := api.get(f"/v1/jobs/{job['id']}").json())["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert now["status"] == "running", now
    return job


JOBS = [
    {"prompt": "a red cat", "seed": 11},
    {"prompt": "the sea at night, oil on canvas", "seed": 12, "negative_prompt": "blurry"},
    {"prompt": "x", "seed": 13, "n": 2},
    {"prompt": "a lighthouse", "seed": 14},
]
COMMON = {"type": "txt2img", "width": 64, "height": 64, "steps": 4, "scheduler": "euler_a"}


def test_compatible_jobs_share_a_call_and_keep_their_images(batching: httpx.Client) -> None:
    api = batching
    busy = blocker(api)
    ids = [submit(api, **COMMON, **body)["id"] for body in JOBS]
    # Another size: not compatible, runs on its own.
    other = submit(api, **{**COMMON, "width": 72}, prompt="apart", seed=15)["id"]
    done = [wait(api, job_id) for job_id in ids]
    alone_job = wait(api, other)
    assert wait(api, busy["id"])["status"] == "succeeded"
    for job in done:
        assert job["status"] == "succeeded", job
        assert job["timings"]["batch_jobs"] == len(JOBS), job["timings"]
        assert job["timings"]["batch_images"] == 5
        assert job["progress"]["step"] == job["progress"]["total_steps"] == 4
    assert done[2]["result"]["images"][1]["seed"] == 14 and len(done[2]["result"]["images"]) == 2
    assert "batch_jobs" not in alone_job["timings"]

    # Each job again, alone: the same images (seeds preserved); batched matrix products may
    # round differently, by at most 1/255 on a few pixels.
    for body, batched in zip(JOBS, done, strict=True):
        solo = wait(api, submit(api, **COMMON, **body)["id"])
        assert "batch_jobs" not in solo["timings"]
        for index in range(body.get("n", 1)):
            diff = np.abs(pixels(api, batched, index) - pixels(api, solo, index))
            assert diff.max() <= 1, (body, int(diff.max()))
            assert (diff > 0).mean() < 0.01
    # Different seeds in one batch made different images.
    assert np.abs(pixels(api, done[0]) - pixels(api, done[3])).mean() > 5


def test_a_canceled_job_drops_out_of_its_batch(batching: httpx.Client) -> None:
    api = batching
    busy = blocker(api)
    body = {**COMMON, "steps": 150}
    ids = [submit(api, **body, prompt=f"job {i}", seed=i)["id"] for i in range(3)]
    wait(api, busy["id"])
    deadline = time.monotonic() + 30
    while api.get(f"/v1/jobs/{ids[1]}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert api.delete(f"/v1/jobs/{ids[1]}").status_code == 200
    first, canceled, last = (wait(api, job_id) for job_id in ids)
    assert canceled["status"] == "canceled" and canceled["result"] is None
    for job in (first, last):
        assert job["status"] == "succeeded", job
        assert job["timings"]["batch_jobs"] == 3
        assert len(job["result"]["images"]) == 1


def test_companions_come_from_every_priority_if_compatible(batching: httpx.Client) -> None:
    api = batching
    busy = blocker(api)
    lead = submit(api, **COMMON, prompt="lead", seed=1)["id"]
    high = submit(api, **COMMON, prompt="urgent too", seed=2, priority="high")["id"]
    other_steps = submit(api, **{**COMMON, "steps": 3}, prompt="fewer steps", seed=3)["id"]
    wait(api, busy["id"])
    jobs = {job_id: wait(api, job_id) for job_id in (lead, high, other_steps)}
    assert all(job["status"] == "succeeded" for job in jobs.values())
    # The high-priority job runs first and takes the compatible normal one along.
    assert jobs[high]["timings"].get("batch_jobs") == 2
    assert jobs[lead]["timings"].get("batch_jobs") == 2
    assert "batch_jobs" not in jobs[other_steps]["timings"]


def test_a_batch_past_its_time_limit_ends_every_job_of_it_as_timeout(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The batch has its jobs' time limits together (2 s each here); its call needs far more.
    Every job of it fails `timeout` then: none runs again alone, without a limit."""
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    (tmp_path / "redis").mkdir()
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    svc = Service(
        redis=server,
        workdir=tmp_path,
        env=service_env(
            server.url,
            tmp_path / "data",
            catalog,
            LATENTQ_BATCH_MAX="4",
            LATENTQ_BATCH_MAX_PIXELS=str(4 * 384 * 384),
            LATENTQ_JOB_TIMEOUT_FLOOR_S="2",
            LATENTQ_TIMEOUT_S_PER_MP_STEP="0.01",
        ),
    )
    try:
        svc.start_api()
        with httpx.Client(base_url=svc.base_url, timeout=30) as api:
            body = {**COMMON, "width": 384, "height": 384, "steps": 150}
            # Queued before any worker is there, so that the first one takes all four.
            ids = [submit(api, **body, prompt=f"late {i}", seed=i)["id"] for i in range(4)]
            worker = svc.start_worker("batcher")
            ended = [wait(api, job_id, timeout=180) for job_id in ids]
        assert "batch of 4 jobs" in worker.log.read_text()
        for job in ended:
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "timeout" and job["result"] is None
            ran_s = seconds(job["finished_at"]) - seconds(job["started_at"])
            assert ran_s < 8 + 6, ran_s  # the batch's 8 s, and the time to end four jobs
    finally:
        svc.stop()
        server.stop()


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
