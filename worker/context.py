"""What a worker process holds while it runs jobs: its context (lifecycle, storage, warm
models, batching settings, the stop signals), the jobs it holds and their leases (`Held`),
and the step monitor that writes progress and stops a pipeline call whose job is no longer
this worker's (`StepMonitor`, raising `JobCanceled` or `JobGivenBack`)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs import defaults
from jobs.batching import Batcher
from jobs.catalog import Catalog
from jobs.lifecycle import Lifecycle
from jobs.records import JobRecord, JobStore, Progress
from jobs.storage import Storage

if TYPE_CHECKING:
    from worker.image_model import WarmModel
    from worker.video_model import WarmVideoModel

log = logging.getLogger(__name__)


class JobGivenBack(Exception):
    """Raised from the step callback when a stopping worker's grace period is over."""


class JobCanceled(Exception):
    """Raised from the step callback when the job was canceled: it aborts the pipeline call
    at once, before the remaining steps and the VAE decode."""


class Held:
    """The jobs this worker holds now — the one running, and the companions of a batch that
    wait for their turn — and the one place their leases are renewed: every beat renews them
    all, together with the progress of those running."""

    def __init__(self, lifecycle: Lifecycle, worker: str) -> None:
        self.lifecycle = lifecycle
        self.worker = worker
        self.jobs: dict[str, JobRecord] = {}

    def take(self, record: JobRecord) -> None:
        self.jobs[record.id] = record

    def let_go(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)

    def beat(self, steps: dict[str, tuple[Progress, bool]] | None = None) -> set[str]:
        """Write the progress in `steps` ((progress, with its webhook) by job id) and renew
        every lease held, in one step; the ids of the jobs no longer this worker's to run,
        which it lets go."""
        steps = steps or {}
        running = {i: (self.jobs[i], *step) for i, step in steps.items() if i in self.jobs}
        lost = self.lifecycle.progress(self.worker, running, self.jobs.values())
        for job_id in lost:
            self.let_go(job_id)
        return lost | (set(steps) - set(running))


@dataclass
class WorkerContext:
    """What a worker process holds for its whole life."""

    name: str
    lifecycle: Lifecycle
    storage: Storage
    models: dict[str, WarmModel | WarmVideoModel]
    """Model id → its warm model (the types only: this module loads without torch)."""
    info: dict[str, Any] = field(default_factory=dict)
    catalog: Catalog | None = None
    """The catalogue the worker loaded: each job is checked against it before any GPU work
    (`jobs.checks`, as the API checked it at submit)."""
    drain_deadline: float | None = None
    """Set when the worker was asked to stop (monotonic time): the running job may finish
    until then; past it, the job is given back to its queue."""

    broken: str | None = None
    """Set when the device failed beyond repair: the process exits after the current job."""

    batcher: Batcher | None = None
    """Takes compatible queued jobs along with the one being run (None: no batching)."""
    batch_max: int = 1
    """The most images of one batched pipeline call."""
    batch_max_pixels: int = 0
    """The most output pixels of one batched pipeline call."""
    batch_wait_s: float = 0.0
    """How long a job waits for companions to be queued."""

    crash_at: str | None = None
    """A test hook: the point (see `crash_point`) at which this process kills itself, for
    the chaos tests (`LATENTQ_TEST_CRASH_AT`); None outside them."""

    held: Held = field(init=False)

    def __post_init__(self) -> None:
        self.held = Held(self.lifecycle, self.name)

    @property
    def store(self) -> JobStore:
        return self.lifecycle.store

    def draining_past_deadline(self) -> bool:
        return self.drain_deadline is not None and time.monotonic() > self.drain_deadline


def crash_point(context: WorkerContext, point: str) -> None:
    """Where the chaos tests kill a worker (`after_pop`, `give_back`, `after_give_back`), to
    show that no job is lost there. Does nothing unless `context.crash_at` names the point."""
    if context.crash_at == point:
        log.warning("killing this worker at %s (LATENTQ_TEST_CRASH_AT)", point)
        os.kill(os.getpid(), signal.SIGKILL)


class StepMonitor:
    """Called after each denoising step of a pipeline call that runs `job_ids`. At most every
    `PROGRESS_MIN_INTERVAL_S` (and always at the last step) it beats: their progress is
    written and every held lease renewed (the heartbeat that tells the reapers this worker
    is alive). Jobs that are no longer this worker's are `dropped`; when none is left, the
    call stops (`JobCanceled`). Fast steps cost no Redis round trip in between."""

    def __init__(
        self, held: Held, job_ids: list[str], give_back: Callable[[], bool] | None = None
    ) -> None:
        self.held = held
        self.job_ids = job_ids
        self.give_back = give_back
        self.dropped: set[str] = set()
        self.started = time.monotonic()
        self._last = 0.0
        self._last_hook = 0.0

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        # Redis is touched at most every PROGRESS_MIN_INTERVAL_S (and at the last step): the
        # lease lasts seconds, and a cancel is seen within that interval.
        if step >= total or now - self._last >= defaults.PROGRESS_MIN_INTERVAL_S:
            self._last = now
            elapsed = now - self.started
            eta = round(elapsed / step * (total - step), 2) if step else None
            progress = Progress(step=step, total_steps=total, eta_s=eta)
            hook = step >= total or now - self._last_hook >= defaults.WEBHOOK_PROGRESS_INTERVAL_S
            if hook:
                self._last_hook = now
            running = [j for j in self.job_ids if j not in self.dropped]
            self.dropped |= self.held.beat({j: (progress, hook) for j in running})
            self.dropped &= set(self.job_ids)
            if len(self.dropped) == len(self.job_ids):
                raise JobCanceled(self.job_ids[0])
        if self.give_back is not None and self.give_back():
            raise JobGivenBack(self.job_ids[0])
