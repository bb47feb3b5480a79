"""Load: closed-loop clients over HTTP (httpx, asyncio), one request at a time each.

Every client sends its next request as soon as the previous one is answered, until the run's
job count is reached; so `concurrency` requests are in flight all the time but at the end.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import httpx

from bench.stats import Sample

TERMINAL = ("succeeded", "failed", "canceled")
WAIT_S = 60
"""`Prefer: wait=60`, the most the API holds a submit."""


def client(concurrency: int, base_url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(300.0))


async def closed_loop(
    concurrency: int,
    jobs: int,
    one: Callable[[int], Awaitable[Sample]],
    max_s: float | None = None,
) -> list[Sample]:
    """Run `one(index)` for indexes 0..jobs-1 from `concurrency` clients; past `max_s`
    seconds no new request starts (those in flight finish), so a pathologically slow
    configuration cannot hold the whole run."""
    indexes = itertools.count()
    samples: list[Sample] = []
    deadline = None if max_s is None else time.monotonic() + max_s

    async def run_client() -> None:
        while (index := next(indexes)) < jobs:
            if deadline is not None and time.monotonic() > deadline:
                return
            samples.append(await one(index))

    await asyncio.gather(*(run_client() for _ in range(concurrency)))
    return samples


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def phases(job: dict[str, Any], sent_at: float, done_at: float) -> dict[str, float]:
    """Where a job's time went (ms), from its timestamps and the client's wall clock."""
    created = _epoch(job.get("created_at"))
    started = _epoch(job.get("started_at"))
    finished = _epoch(job.get("finished_at"))
    if created is None or started is None or finished is None:
        return {}
    out = {
        "submit": (created - sent_at) * 1000,
        "queue": (started - created) * 1000,
        "run": (finished - started) * 1000,
        "notify": (done_at - finished) * 1000,
    }
    run_s = (job.get("timings") or {}).get("run_s")
    if isinstance(run_s, int | float):
        out["worker_run_s_field"] = run_s * 1000
    return out


def _job_sample(
    job: dict[str, Any], start: float, end: float, seed: int, polls: int, wall: tuple[float, float]
) -> Sample:
    status = job.get("status")
    if status != "succeeded":
        code = (job.get("error") or {}).get("code")
        return Sample(start, end, ok=False, seed=seed, error=f"job {status} {code or ''}".strip())
    images = (job.get("result") or {}).get("images") or []
    url = images[0]["url"].encode() if images else None
    return Sample(
        start,
        end,
        ok=url is not None,
        seed=seed,
        polls=polls,
        image=url,
        error=None if url else "no image",
        phases=phases(job, *wall),
    )


async def latentq_job(
    http: httpx.AsyncClient, body: dict[str, Any], *, mode: str, poll_s: float
) -> Sample:
    """Submit a job and learn that it ended: `wait` holds the submit (Prefer: wait=60) and
    polls only if the job outlasts it; `poll` gets a 202 and GETs the job every `poll_s`."""
    seed = int(body.get("seed", 0))
    headers = {"Prefer": f"wait={WAIT_S}"} if mode == "wait" else {}
    sent_at = time.time()
    start = time.monotonic()
    polls = 0
    try:
        response = await http.post("/v1/jobs", json=body, headers=headers)
        if response.status_code not in (200, 202):
            error = f"http {response.status_code}"
            return Sample(start, time.monotonic(), ok=False, seed=seed, error=error)
        job = response.json()
        while job.get("status") not in TERMINAL:
            await asyncio.sleep(poll_s)
            response = await http.get(f"/v1/jobs/{job['id']}")
            polls += 1
            if response.status_code != 200:
                error = f"http {response.status_code}"
                return Sample(start, time.monotonic(), ok=False, seed=seed, error=error)
            job = response.json()
    except httpx.HTTPError as exc:
        return Sample(start, time.monotonic(), ok=False, seed=seed, error=type(exc).__name__)
    end, done_at = time.monotonic(), time.time()
    return _job_sample(job, start, end, seed, polls, (sent_at, done_at))


async def naive_request(http: httpx.AsyncClient, body: dict[str, Any]) -> Sample:
    seed = int(body.get("seed", 0))
    start = time.monotonic()
    try:
        response = await http.post("/generate", json=body)
        end = time.monotonic()
    except httpx.HTTPError as exc:
        return Sample(start, time.monotonic(), ok=False, seed=seed, error=type(exc).__name__)
    if response.status_code != 200:
        return Sample(start, end, ok=False, seed=seed, error=f"http {response.status_code}")
    try:
        image = base64.b64decode(response.json()["image"])
    except (ValueError, KeyError, TypeError):
        return Sample(start, end, ok=False, seed=seed, error="no image in the answer")
    return Sample(start, end, ok=True, seed=seed, image=image)


async def submit_only(http: httpx.AsyncClient, body: dict[str, Any]) -> Sample:
    """POST /v1/jobs and nothing else: the API's own cost of accepting a job."""
    start = time.monotonic()
    try:
        response = await http.post("/v1/jobs", json=body)
    except httpx.HTTPError as exc:
        return Sample(start, time.monotonic(), ok=False, error=type(exc).__name__)
    end = time.monotonic()
    if response.status_code != 202:
        return Sample(start, end, ok=False, error=f"http {response.status_code}")
    return Sample(start, end, ok=True)


async def fetch_images(base_url: str, samples: Sequence[Sample], concurrency: int = 8) -> None:
    """Replace each sample's image URL with the image's bytes (after the timed run)."""
    gate = asyncio.Semaphore(concurrency)
    async with client(concurrency, base_url) as http:

        async def fetch(sample: Sample) -> None:
            if sample.image is None:
                return
            async with gate:
                try:
                    response = await http.get(sample.image.decode())
                except httpx.HTTPError:
                    sample.image = None
                    return
            sample.image = response.content if response.status_code == 200 else None

        await asyncio.gather(*(fetch(s) for s in samples if s.ok))
