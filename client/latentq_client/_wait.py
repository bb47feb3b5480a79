"""The decisions of `Job.wait`, shared by the sync and async clients; they do the I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from latentq_client.errors import (
    AuthenticationError,
    LatentqConnectionError,
    LatentqError,
    ServerError,
    WaitTimeout,
)
from latentq_client.progress import ProgressCallback, Reporter
from latentq_client.sse import Event

if TYPE_CHECKING:
    from latentq_client.job import BaseJob

TERMINAL = frozenset({"succeeded", "failed", "canceled"})

STREAM_READ_S = 30.0
"""Longest silence on the events stream before the job is checked with a GET."""

STREAM_FAILURES_MAX = 3
"""Consecutive broken streams after which `wait` polls instead."""

POLL_MIN_S, POLL_MAX_S, POLL_FACTOR = 0.1, 2.0, 1.5

TRANSIENT_MAX = 5
"""Consecutive connection errors or 5xx answers to a poll before `wait` gives up."""


class Waiter:
    """The state of one wait: the job as last seen, the deadline, stream or polling."""

    def __init__(
        self, job: dict[str, Any], timeout: float | None, progress: bool | ProgressCallback | None
    ) -> None:
        self.job = dict(job)
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.reporter = Reporter(progress)
        self.use_stream = True
        self._stream_failures = 0
        self._transient = 0
        self._poll_delay = POLL_MIN_S
        self.reporter.report(self.job)

    @property
    def done(self) -> bool:
        return self.job.get("status") in TERMINAL

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def stream_read_timeout(self) -> float:
        remaining = self.remaining()
        return STREAM_READ_S if remaining is None else max(0.05, min(STREAM_READ_S, remaining))

    def on_event(self, event: Event) -> bool:
        """Apply one event; True when it carried the finished job."""
        if event.name == "state" and "status" in event.data:
            self.job = dict(event.data)
        elif event.name == "progress":
            self.job["progress"] = {**(self.job.get("progress") or {}), **event.data}
            if self.job.get("status") == "queued":
                self.job["status"] = "running"
                self.job["queue_position"] = None
        elif event.name in TERMINAL:
            if event.data.get("status") not in TERMINAL:
                # Not the whole Job: end the stream and read the job instead.
                self._stream_failures += 1
                return False
            self.job = dict(event.data)
        else:
            return False
        self._stream_failures = 0
        self.reporter.report(self.job)
        return self.done

    @contextmanager
    def following(self) -> Iterator[None]:
        """Around reading the events stream, which ended without the finished job unless that
        came: counts a broken stream, and ends it on an error, but an AuthenticationError."""
        try:
            yield
        except LatentqConnectionError as exc:
            # Silence is no failure of the stream: the GET that follows checks the job.
            if not isinstance(exc.__cause__, httpx.ReadTimeout):
                self._count_stream_failure()
        except AuthenticationError:
            raise
        except LatentqError as exc:
            if exc.status in (404, 405, 406, 501):
                # No events endpoint here (or an unknown job, which the GET that follows reports).
                self.use_stream = False
            else:
                self._count_stream_failure()
        else:
            if not self.done:
                self._count_stream_failure()

    def _count_stream_failure(self) -> None:
        self._stream_failures += 1
        if self._stream_failures >= STREAM_FAILURES_MAX:
            self.use_stream = False

    def on_job(self, job: dict[str, Any]) -> bool:
        self._transient = 0
        self.job = dict(job)
        self.reporter.report(self.job)
        return self.done

    def poll_error(self, error: LatentqError) -> None:
        """Tolerate a few transient failures of a poll (an API restarting); raise the rest."""
        transient = isinstance(error, LatentqConnectionError | ServerError)
        self._transient += 1
        if not transient or self._transient > TRANSIENT_MAX or self.expired():
            raise error

    def pause(self, job: BaseJob) -> float:
        """Seconds to sleep before trying again; WaitTimeout (`job` updated) once time is up."""
        if self.expired():
            job._update(self.job)
            raise WaitTimeout(job, self.timeout or 0.0)
        if self.use_stream:
            return min(POLL_MAX_S, 0.1 * self._stream_failures)
        delay = self._poll_delay
        self._poll_delay = min(POLL_MAX_S, self._poll_delay * POLL_FACTOR)
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)

    def close(self) -> None:
        self.reporter.close()
