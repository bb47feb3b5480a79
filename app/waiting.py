"""Following a job to its end: the SSE stream and `Prefer: wait`."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.events import EventHub
from app.service import JobService
from jobs.protocol import JobStatus
from jobs.records import JobRecord
from jobs.views import progress_view

REREAD_S = 5.0
"""Listeners re-read the record this often even without messages (a lost message, a Redis
reconnect), so they can be late but never stuck."""

WAIT_MAX_S = 60

_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*([0-9]+)(?![0-9])", re.IGNORECASE)


def prefer_wait(header: str | None) -> int | None:
    """Seconds from a `Prefer: wait=N` header (RFC 7240), capped at 60; None when absent.

    N is ASCII digits only, and one too long to matter is not converted (`int()` refuses
    more than 4,300 digits)."""
    if not header:
        return None
    match = _WAIT.search(header)
    if match is None:
        return None
    digits = match.group(1)
    return WAIT_MAX_S if len(digits) > 4 else min(int(digits), WAIT_MAX_S)


@dataclass
class Update:
    """One thing to tell a follower: a progress step, or the record in a new status."""

    progress: dict[str, Any] | None = None
    record: JobRecord | None = None


async def follow(hub: EventHub, jobs: JobService, job_id: str) -> AsyncGenerator[Update, None]:
    """The job's record now, then its progress and status changes until it ends."""
    async with hub.listen(job_id) as queue:
        record = await run_in_threadpool(jobs.get, job_id)
        yield Update(record=record)
        status, step = record.status, record.progress.step
        while not status.is_terminal():
            try:
                message: dict[str, Any] | None = await asyncio.wait_for(queue.get(), REREAD_S)
            except TimeoutError:
                message = None
            if message is not None and message.get("event") == "progress":
                if int(message.get("step") or 0) > step and status is JobStatus.RUNNING:
                    step = int(message["step"])
                    yield Update(progress=progress_view(message))
                continue
            record = await run_in_threadpool(jobs.get, job_id)
            if record.status is not status:
                status = record.status
                yield Update(record=record)


_ENDED = frozenset(s.value for s in JobStatus if s.is_terminal())


async def wait_for_end(
    hub: EventHub, jobs: JobService, record: JobRecord, timeout_s: float
) -> JobRecord:
    """The record once the job has ended, or as it stands after `timeout_s`.

    Reads the record once after subscribing (the job may have ended already) and again only
    when a status message says the job ended (or every `REREAD_S`, in case a message was
    lost): progress and the move to running cost nothing here.
    """
    return await _wait(hub, jobs, record, timeout_s, change=False)


async def wait_for_change(
    hub: EventHub, jobs: JobService, record: JobRecord, timeout_s: float
) -> JobRecord:
    """The record once the job's status differs from `record`'s (queued → running, or its
    end), or as it stands after `timeout_s`: a long poll. Progress steps do not count."""
    return await _wait(hub, jobs, record, timeout_s, change=True)


async def _wait(
    hub: EventHub, jobs: JobService, record: JobRecord, timeout_s: float, *, change: bool
) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    seen = record.status

    def waiting(status: JobStatus) -> bool:
        return not status.is_terminal() and (not change or status is seen)

    async with hub.listen(record.id) as queue:
        record = await run_in_threadpool(jobs.get, record.id)
        while waiting(record.status):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await asyncio.wait_for(queue.get(), min(REREAD_S, remaining))
            except TimeoutError:
                message = None
                if deadline - time.monotonic() <= 0:
                    break
            if message is not None and (
                message.get("event") != "status"
                or (message.get("status") not in _ENDED and not change)
            ):
                continue
            record = await run_in_threadpool(jobs.get, record.id)
    return record


RETRY_AFTER_MAX_S = 5
"""The longest `Retry-After` a job not yet ended is given."""


def retry_after(view: dict[str, Any]) -> int:
    """Seconds a client polling a job that has not ended should wait before asking again:
    while it runs, its ETA; while queued, a second per place in the queue (1: next); between
    1 and `RETRY_AFTER_MAX_S`. (`Prefer: wait` is the way to hear of a change at once.)"""
    if view["status"] == JobStatus.RUNNING:
        eta = (view.get("progress") or {}).get("eta_s")
        guess = float(eta) if eta is not None else 1.0
    else:
        guess = float(view.get("queue_position") or 1)
    return max(1, min(RETRY_AFTER_MAX_S, math.ceil(guess)))
