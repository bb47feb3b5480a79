"""Running one job, or a micro-batch of them: record → warm pipeline → stored images → record.

The runner only orchestrates: it moves its jobs through their statuses with `jobs.lifecycle`
(start, progress, succeed, fail, expire, give back), keeps the lease of every job it holds
(`Held`), and stops a job that is no longer its to run (canceled, or taken over after a lost
lease). What a job makes, and the faults it survives, are in `worker.outputs` and
`worker.faults`; what the worker holds between jobs (its context, the held jobs' leases, the
step monitor), in `worker.context`.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from PIL import Image
from rq.timeouts import JobTimeoutException

from jobs import logs
from jobs.batching import describe, images
from jobs.checks import Misfit, check_job
from jobs.errors import FailureCode
from jobs.protocol import JobStatus, Txt2ImgParams
from jobs.records import JobRecord, UnreadableParams
from worker import metrics
from worker.adapters import UnknownAdapter
from worker.batched import supports_batching, txt2img_many
from worker.context import (
    JobCanceled,
    JobGivenBack,
    StepMonitor,
    WorkerContext,
    crash_point,
)
from worker.faults import JobFailed, WorkerBroken, is_blank, is_device_broken, is_out_of_memory
from worker.outputs import produce

if TYPE_CHECKING:
    from worker.image_model import WarmModel

log = logging.getLogger(__name__)

GIVEN_BACK = "given_back"
"""Outcome of a run stopped because its worker was stopping; the job is queued again."""

SUPERSEDED = "superseded"
"""Outcome of a run whose job was taken over by another worker after this one's lease ran
out (it was too slow to renew it, not dead)."""


def execute(context: WorkerContext, job_id: str) -> str:
    """Run a job to its end status; never raises for a failure of the job itself.

    With micro-batching on, compatible queued jobs are taken along and run in the same
    pipeline call (see `jobs.batching`); each still ends, and is recorded, on its own.
    """
    record = context.store.get(job_id)
    if record is None:
        log.warning("job %s has no record (expired?); skipping", job_id)
        return "missing"
    crash_point(context, "after_pop")
    token = logs.request_id.set(record.request_id)
    try:
        running = context.lifecycle.start(record, context.name)
        if running is None:
            log.info("job %s is %s, not queued; skipping", job_id, record.status)
            return "skipped"
        context.held.take(running)
        try:
            refused = _refused(context, running)
            if refused is not None:
                return refused
            companions = _companions(context, running)
            if companions:
                return _execute_batch(context, [running, *companions])
            return _execute(context, running)
        except JobTimeoutException:
            return _expire_held(context)
        finally:
            context.held.jobs.clear()
    finally:
        logs.request_id.reset(token)


def _refused(context: WorkerContext, record: JobRecord) -> str | None:
    """Fail a job its model cannot run (an unknown scheduler or adapter, too few steps, ...)
    before any GPU work; None when it may run. Its companions in a batch share what is
    checked (`jobs.batching.batch_key`), so the lead's check covers them."""
    params = record.params
    if context.catalog is None or isinstance(params, UnreadableParams):
        return None  # unreadable parameters fail in `produce`, with what was wrong
    if record.model not in context.models:
        return None  # `produce` fails it: this worker does not hold the model
    try:
        check_job(context.catalog, params)
    except Misfit as exc:
        context.lifecycle.fail(record, context.name, FailureCode.INVALID_INPUT, str(exc))
        _end(record, FailureCode.INVALID_INPUT.value, 0.0)
        return FailureCode.INVALID_INPUT.value
    return None


def _execute(context: WorkerContext, record: JobRecord) -> str:
    metrics.BATCH_SIZE.observe(images(record))
    started = time.perf_counter()
    outcome = _outcome(context, record)
    _end(record, outcome, time.perf_counter() - started)
    return outcome


def _end(record: JobRecord, outcome: str, elapsed: float) -> None:
    labels = (record.type.value, record.model)
    metrics.JOB_DURATION.labels(*labels).observe(elapsed)
    if outcome == JobStatus.SUCCEEDED.value and record.progress.total_steps:
        metrics.STEP_SECONDS.labels(*labels).observe(elapsed / record.progress.total_steps)
    if outcome in (JobStatus.SUCCEEDED.value, JobStatus.CANCELED.value, SUPERSEDED, GIVEN_BACK):
        metrics.JOBS.labels(*labels, outcome, "").inc()
    else:
        metrics.JOBS.labels(*labels, JobStatus.FAILED.value, outcome).inc()


def _expire_held(context: WorkerContext) -> str:
    """RQ's time limit went off, wherever the run was: every job still held here ran past it
    (a batch's limit is its jobs' together) and fails `timeout`; none is run again."""
    for record in list(context.held.jobs.values()):
        context.lifecycle.expire(record, context.name)
        _end(record, FailureCode.TIMEOUT.value, metrics.age_s(record.started_at))
        _release(context, record)
    return FailureCode.TIMEOUT.value


# -- micro-batching ------------------------------------------------------------------------


def _companions(context: WorkerContext, lead: JobRecord) -> list[JobRecord]:
    """Queued jobs that can share `lead`'s pipeline call, started here (and held)."""
    batcher = context.batcher
    model = context.models.get(lead.model)
    params = lead.params
    if batcher is None or model is None or not supports_batching(model):
        return []
    if not isinstance(params, Txt2ImgParams):
        return []
    try:
        key_of = model.batch_key
        wanted = key_of(params)
        if wanted is None:
            return []
        width, height = params.width or 0, params.height or 0
        images_max = min(context.batch_max, context.batch_max_pixels // max(1, width * height))
        room = images_max - params.n
        taken: list[JobRecord] = []
        deadline = time.monotonic() + context.batch_wait_s
        while room > 0:
            found = batcher.take(lead, wanted, room, key_of)
            for record in found:
                context.held.take(record)
            taken += found
            room -= sum(images(r) for r in found)
            if room <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        return taken
    except JobTimeoutException:
        raise  # the lead's time is up (see `execute`)
    except Exception:
        # Batching is an optimisation: the job runs alone rather than not at all.
        log.exception("looking for jobs to batch with %s failed; running it alone", lead.id)
        return [r for r in context.held.jobs.values() if r.id != lead.id]


def _execute_batch(context: WorkerContext, records: list[JobRecord]) -> str:
    """Run several compatible jobs in one pipeline call; each ends on its own."""
    count = sum(images(r) for r in records)
    log.info("batch of %d jobs, %d images: %s", len(records), count, describe(records))
    _extend_time_limit(sum(r.timeout_s or 0 for r in records))
    metrics.BATCH_SIZE.observe(count)
    metrics.BATCH_JOBS.observe(len(records))
    started = time.perf_counter()
    outcomes = _batch_outcomes(context, records)
    elapsed = time.perf_counter() - started
    for record in records:
        _end(record, outcomes[record.id], elapsed)
    return outcomes[records[0].id]


def _extend_time_limit(seconds: int) -> None:
    """Give a batch the time its jobs would have had one after another: RQ's time limit is
    the lead job's, armed as an alarm signal around the whole call."""
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return
    remaining = signal.alarm(0)
    if remaining:
        signal.alarm(max(remaining, seconds))


def _batch_outcomes(context: WorkerContext, records: list[JobRecord]) -> dict[str, str]:
    # Batches are formed only for models that take them (`_companions`).
    model = cast("WarmModel", context.models[records[0].model])
    params = [cast(Txt2ImgParams, r.params) for r in records]
    monitor = StepMonitor(
        context.held, [r.id for r in records], give_back=context.draining_past_deadline
    )
    started = time.perf_counter()
    try:
        groups = txt2img_many(model, params, monitor)
    except JobCanceled:
        model.release()
        return {r.id: _stopped(context, r) for r in records}
    except JobGivenBack:
        return {
            r.id: _stopped(context, r) if r.id in monitor.dropped else _give_back(context, r)
            for r in records
        }
    except JobTimeoutException:
        raise  # the batch's time is up: no job of it runs again alone (see `execute`)
    except Exception as exc:
        if is_device_broken(exc) and not is_out_of_memory(exc):
            log.critical("the device is broken (%s): giving the batch back", exc)
            context.broken = str(exc)
            return {r.id: _give_back(context, r) for r in records}
        # Out of memory or anything else: each job alone, with the single run's own handling
        # (the others wait, held: their leases are renewed as it runs).
        log.warning("the batched call failed (%s); running its jobs one by one", exc)
        model.release()
        return {
            r.id: _stopped(context, r) if r.id in monitor.dropped else _outcome(context, r)
            for r in records
        }
    call_s = time.perf_counter() - started
    outcomes = {}
    total = sum(p.n for p in params)
    for record, made in zip(records, groups, strict=True):
        if record.id in monitor.dropped:
            outcomes[record.id] = _stopped(context, record)
        elif any(is_blank(image) for image in made):
            # Alone, it gets the float32 decode retry.
            outcomes[record.id] = _outcome(context, record)
        else:
            batched = Batched(made, len(records), total, call_s)
            outcomes[record.id] = _outcome(context, record, batched)
    return outcomes


@dataclass(frozen=True)
class Batched:
    """What a batched pipeline call made for one of its jobs."""

    images: list[Image.Image]
    jobs: int
    """Jobs that shared the call."""
    images_in_call: int
    call_s: float
    """Seconds of the shared call."""


# -- one job's end -------------------------------------------------------------------------


def _outcome(context: WorkerContext, record: JobRecord, batched: Batched | None = None) -> str:
    """Run the job (or store what a batched call made for it) and end it; then it is no
    longer held. RQ's time limit passes through (see `execute`)."""
    outcome = _run_to_end(context, record, batched)
    context.held.let_go(record.id)
    return outcome


def _run_to_end(context: WorkerContext, record: JobRecord, batched: Batched | None) -> str:
    lifecycle, job_id = context.lifecycle, record.id
    started = time.perf_counter()
    on_step = StepMonitor(context.held, [job_id], give_back=context.draining_past_deadline)
    try:
        made = produce(
            record,
            context.models.get(record.model),
            context.storage,
            on_step,
            renew=lambda: _renew(context, job_id),
            generated=batched.images if batched else None,
        )
    except JobCanceled:
        _release(context, record)
        return _stopped(context, record)
    except JobGivenBack:
        return _give_back(context, record)
    except WorkerBroken as exc:
        log.critical(
            "the device is broken (%s): giving job %s back; this worker must go", exc, job_id
        )
        context.broken = str(exc)
        return _give_back(context, record)
    except JobFailed as exc:
        lifecycle.fail(record, context.name, exc.code, exc.message)
        return exc.code.value
    except UnknownAdapter as exc:
        # The catalogue this worker loaded differs from the API's (a rollout in progress).
        lifecycle.fail(record, context.name, FailureCode.MODEL_UNAVAILABLE, str(exc))
        return FailureCode.MODEL_UNAVAILABLE.value
    except JobTimeoutException:
        raise
    except Exception as exc:
        log.exception("job %s failed", job_id)
        message = f"the job failed: {type(exc).__name__}"
        lifecycle.fail(record, context.name, FailureCode.INTERNAL, message)
        _release(context, record)
        return FailureCode.INTERNAL.value
    timings = {"run_s": round(time.perf_counter() - started, 4)}
    if batched is not None:
        timings["run_s"] = round(timings["run_s"] + batched.call_s, 4)
        timings["batch_jobs"] = batched.jobs
        timings["batch_images"] = batched.images_in_call
    if not lifecycle.succeed(record, context.name, made, timings):
        # Canceled after the last step, or re-run elsewhere after this worker's lease ran out
        # (the other run writes the same files under the same keys).
        status = context.store.status(job_id)
        log.warning("job %s finished here but is %s; result not recorded", job_id, status)
        return JobStatus.CANCELED.value if status is JobStatus.CANCELED else SUPERSEDED
    return JobStatus.SUCCEEDED.value


def _renew(context: WorkerContext, job_id: str) -> None:
    """Renew the leases between phases that have no steps (decoding, encoding, storing)."""
    if job_id in context.held.beat():
        raise JobCanceled(job_id)


def _give_back(context: WorkerContext, record: JobRecord) -> str:
    """Put the job back at the front of its queue for another worker (this one is stopping,
    or its device broke)."""
    crash_point(context, "give_back")
    context.lifecycle.give_back(record, context.name)
    crash_point(context, "after_give_back")
    context.held.let_go(record.id)
    _release(context, record)
    return GIVEN_BACK


def _stopped(context: WorkerContext, record: JobRecord) -> str:
    """A run stopped because its job was canceled (the cancel made the move): its outcome."""
    context.held.let_go(record.id)
    logs.transition(
        record.id,
        record.model,
        record.type.value,
        "stopped",
        previous="canceled",
        worker=context.name,
    )
    return JobStatus.CANCELED.value


def _release(context: WorkerContext, record: JobRecord) -> None:
    """Give back the memory a stopped job held (the CUDA cache), so the next job has it."""
    model = context.models.get(record.model)
    if model is not None:
        model.release()
