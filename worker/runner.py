"""Running one job: record → warm pipeline → stored images → record.

The runner re-validates the job's params (the API checked them, but the record crossed a
process boundary), moves the job through its statuses, writes progress as it goes and stores
the results under keys derived from the job id, so a job that runs twice writes them once.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image
from pydantic import ValidationError

from jobs import defaults, logs, webhooks
from jobs.errors import FailureCode
from jobs.protocol import (
    AnyParams,
    Img2ImgParams,
    InpaintParams,
    JobStatus,
    OutpaintParams,
    OutputFormat,
)
from jobs.queueing import JobQueues
from jobs.records import JobError, JobRecord, JobStore, Progress, StoredImage
from jobs.storage import Storage, job_key
from worker import metrics
from worker.imaging import composite, encode, inpaint_canvas, outpaint_canvas

log = logging.getLogger(__name__)


class JobFailed(Exception):
    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class WorkerContext:
    """What a worker process holds for its whole life."""

    name: str
    store: JobStore
    storage: Storage
    models: dict[str, Any]
    """Model id → `WarmModel` (typed loosely so this module imports without torch)."""
    info: dict[str, Any] = field(default_factory=dict)
    public_url: str = ""
    """Base of the file URLs in webhook bodies (`LATENTQ_PUBLIC_URL`)."""
    url_ttl_s: int = 3600
    queues: JobQueues | None = None
    """Where a job given back during a drain goes (at the front of its queue)."""
    drain_deadline: float | None = None
    """Set when the worker was asked to stop (monotonic time): the running job may finish
    until then; past it, the job is given back to its queue."""

    broken: str | None = None
    """Set when the device failed beyond repair: the process exits after the current job."""

    def draining_past_deadline(self) -> bool:
        return self.drain_deadline is not None and time.monotonic() > self.drain_deadline


class JobGivenBack(Exception):
    """Raised from the step callback when a stopping worker's grace period is over."""


GIVEN_BACK = "given_back"
"""Outcome of a run stopped because its worker was stopping; the job is queued again."""

SUPERSEDED = "superseded"
"""Outcome of a run whose job was taken over by another worker after this one's lease ran
out (it was too slow to renew it, not dead)."""


class JobCanceled(Exception):
    """Raised from the step callback when the job was canceled: it aborts the pipeline call
    at once, before the remaining steps and the VAE decode."""


class StepMonitor:
    """Called after each denoising step: renews the job's lease (the heartbeat that tells the
    reapers this worker is alive), writes and publishes progress (at most every
    `PROGRESS_MIN_INTERVAL_S`, and always the last step), and stops a job that is no longer
    this worker's to run (canceled, or taken over after a lost lease)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        worker: str,
        on_progress: Callable[[Progress], None] | None = None,
        give_back: Callable[[], bool] | None = None,
    ) -> None:
        self.give_back = give_back
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.on_progress = on_progress
        self.started = time.monotonic()
        self._last = 0.0
        self._last_hook = 0.0

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step >= total or now - self._last >= defaults.PROGRESS_MIN_INTERVAL_S:
            self._last = now
            elapsed = now - self.started
            eta = round(elapsed / step * (total - step), 2) if step else None
            progress = Progress(step=step, total_steps=total, eta_s=eta)
            running = self.store.set_progress(self.job_id, progress, self.worker)
            if (
                running
                and self.on_progress is not None
                and (step >= total or now - self._last_hook >= defaults.WEBHOOK_PROGRESS_INTERVAL_S)
            ):
                self._last_hook = now
                self.on_progress(progress)
        else:
            running = self.store.heartbeat(self.job_id, self.worker)
        if not running:
            raise JobCanceled(self.job_id)
        if self.give_back is not None and self.give_back():
            raise JobGivenBack(self.job_id)


def execute(context: WorkerContext, job_id: str) -> str:
    """Run a job to its end status; never raises for a failure of the job itself."""
    store = context.store
    record = store.get(job_id)
    if record is None:
        log.warning("job %s has no record (expired?); skipping", job_id)
        return "missing"
    moved = store.transition(
        job_id, JobStatus.RUNNING, allowed_from=(JobStatus.QUEUED,), worker=context.name
    )
    if moved is None:
        log.info("job %s is %s, not queued; skipping", job_id, record.status)
        return "skipped"
    token = logs.request_id.set(record.request_id)
    try:
        return _execute(context, record)
    finally:
        logs.request_id.reset(token)


def _execute(context: WorkerContext, record: JobRecord) -> str:
    logs.transition(
        record.id,
        record.model,
        record.type.value,
        "running",
        worker=context.name,
        attempts=record.attempts or None,
    )
    _notify(context, record, "start")
    labels = (record.type.value, record.model)
    metrics.QUEUED_SECONDS.labels(record.model).observe(_age_s(record.created_at))
    metrics.BATCH_SIZE.observe(int(record.params.get("n", 1)))
    started = time.perf_counter()
    outcome = _outcome(context, record)
    elapsed = time.perf_counter() - started
    metrics.JOB_DURATION.labels(*labels).observe(elapsed)
    if outcome == JobStatus.SUCCEEDED.value and record.progress.total_steps:
        metrics.STEP_SECONDS.labels(*labels).observe(elapsed / record.progress.total_steps)
    if outcome in (JobStatus.SUCCEEDED.value, JobStatus.CANCELED.value, SUPERSEDED, GIVEN_BACK):
        metrics.JOBS.labels(*labels, outcome, "").inc()
    else:
        metrics.JOBS.labels(*labels, JobStatus.FAILED.value, outcome).inc()
    if outcome not in (JobStatus.CANCELED.value, SUPERSEDED, GIVEN_BACK):
        # A cancel was announced by whoever canceled; a superseded run by the one that won.
        _notify(context, record, "completed")
    return outcome


def _age_s(timestamp: str) -> float:
    created = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - created).total_seconds())


def _outcome(context: WorkerContext, record: JobRecord) -> str:
    store, job_id = context.store, record.id
    started = time.perf_counter()
    try:
        images = _run(context, record)
    except JobCanceled:
        logs.transition(
            job_id,
            record.model,
            record.type.value,
            "stopped",
            previous="canceled",
            worker=context.name,
        )
        _release(context, record)
        return JobStatus.CANCELED.value
    except JobGivenBack:
        _give_back(context, record)
        return GIVEN_BACK
    except WorkerBroken as exc:
        log.critical(
            "the device is broken (%s): giving job %s back; this worker must go", exc, job_id
        )
        _give_back(context, record)
        context.broken = str(exc)
        return GIVEN_BACK
    except JobFailed as exc:
        _fail(context, job_id, exc.code, exc.message)
        return exc.code.value
    except Exception as exc:
        from rq.timeouts import JobTimeoutException

        if isinstance(exc, JobTimeoutException):
            _fail(context, job_id, FailureCode.TIMEOUT, "the job ran past its time limit")
            return FailureCode.TIMEOUT.value
        log.exception("job %s failed", job_id)
        _fail(context, job_id, FailureCode.INTERNAL, f"the job failed: {type(exc).__name__}")
        _release(context, record)
        return FailureCode.INTERNAL.value
    timings = {"run_s": round(time.perf_counter() - started, 4)}
    moved = store.transition(
        job_id,
        JobStatus.SUCCEEDED,
        allowed_from=(JobStatus.RUNNING,),
        holder=context.name,
        images=[i.model_dump() for i in images],
        timings=timings,
    )
    if moved is None:
        # Canceled after the last step, or re-run elsewhere after this worker's lease ran out
        # (the other run writes the same files under the same keys).
        status = store.status(job_id)
        log.warning("job %s finished here but is %s; result not recorded", job_id, status)
        return JobStatus.CANCELED.value if status is JobStatus.CANCELED else SUPERSEDED
    logs.transition(
        job_id, record.model, record.type.value, "succeeded", worker=context.name, timings=timings
    )
    return JobStatus.SUCCEEDED.value


def _notify(context: WorkerContext, record: JobRecord, event: str) -> None:
    """Queue the job's webhook for `event`, if it asked for one; never fails the job."""
    if webhooks.wanted(record.params, event) is None:
        return
    try:
        current = context.store.get(record.id)
        if current is not None:
            webhooks.notify(
                context.store.redis,
                current,
                event,
                context.storage,
                base_url=context.public_url,
                url_ttl_s=context.url_ttl_s,
            )
    except Exception:
        log.exception("could not queue the %s webhook of %s", event, record.id)


def _give_back(context: WorkerContext, record: JobRecord) -> None:
    """Put the job back at the front of its queue for another worker (this one is stopping)."""
    moved = context.store.transition(
        record.id,
        JobStatus.QUEUED,
        allowed_from=(JobStatus.RUNNING,),
        holder=context.name,
        started_at=None,
        worker=None,
        progress=Progress(step=0, total_steps=record.progress.total_steps),
    )
    if moved is not None and context.queues is not None:
        priority = record.typed_params().priority
        with context.store.redis.pipeline(transaction=True) as pipe:
            pipe.multi()
            context.queues.requeue(record.id, record.model, priority, pipe, record.timeout_s)
            pipe.execute()
        logs.transition(
            record.id,
            record.model,
            record.type.value,
            "queued",
            previous="given_back",
            worker=context.name,
        )
    _release(context, record)


def _release(context: WorkerContext, record: JobRecord) -> None:
    """Give back the memory a stopped job held (the CUDA cache), so the next job has it."""
    model = context.models.get(record.model)
    if model is not None:
        model.release()


def _fail(context: WorkerContext, job_id: str, code: FailureCode, message: str) -> None:
    record = context.store.get(job_id)
    if record is not None:
        logs.transition(
            job_id,
            record.model,
            record.type.value,
            "failed",
            worker=context.name,
            error={"code": code.value, "message": message},
        )
    context.store.transition(
        job_id,
        JobStatus.FAILED,
        allowed_from=(JobStatus.RUNNING,),
        holder=context.name,
        error=JobError(code=code.value, message=message),
    )


def _run(context: WorkerContext, record: JobRecord) -> list[StoredImage]:
    try:
        params = record.typed_params()
    except (ValidationError, ValueError) as exc:
        raise JobFailed(
            FailureCode.INVALID_INPUT, f"the job's parameters are invalid: {exc}"
        ) from None
    model = context.models.get(record.model)
    if model is None:
        raise JobFailed(
            FailureCode.MODEL_UNAVAILABLE, f"this worker does not hold model {record.model}"
        )
    on_progress = None
    if webhooks.wanted(record.params, "progress") is not None:

        def on_progress(progress: Progress) -> None:
            view = {**progress.model_dump(), "fraction": progress.fraction}
            try:
                webhooks.notify_progress(context.store.redis, record, view)
            except Exception:  # a webhook never fails the job
                log.exception("could not queue a progress webhook of %s", record.id)

    on_step = StepMonitor(
        context.store,
        record.id,
        context.name,
        on_progress,
        give_back=context.draining_past_deadline,
    )
    outputs = _generate(context, record, params, model, on_step)
    _renew(context, record.id)
    return _store(context, record, params, outputs)


def _renew(context: WorkerContext, job_id: str) -> None:
    """Renew the lease between phases that have no steps (decoding, encoding, storing)."""
    if not context.store.heartbeat(job_id, context.name):
        raise JobCanceled(job_id)


def _generate(
    context: WorkerContext,
    record: JobRecord,
    params: AnyParams,
    model: Any,
    on_step: StepMonitor,
) -> list[Image.Image]:
    canvas = None
    source = None
    if isinstance(params, Img2ImgParams):
        source = _input(context, record, "image", "RGB")
    elif isinstance(params, InpaintParams | OutpaintParams):
        image = _input(context, record, "image", "RGB")
        if isinstance(params, InpaintParams):
            mask = _input(context, record, "mask", "L")
            if mask.size != image.size:
                raise JobFailed(FailureCode.INVALID_INPUT, "mask and image differ in size")
            if mask.getextrema()[1] < 128:
                raise JobFailed(FailureCode.INVALID_INPUT, "the mask is black: nothing to repaint")
            canvas = inpaint_canvas(image, mask, params.mask_blur)
        else:
            canvas = outpaint_canvas(image, params.outpaint, params.mask_blur)

    def run(part: AnyParams, decode_fp32: bool) -> list[Image.Image]:
        if source is not None:
            images: list[Image.Image] = model.img2img(
                part, source, on_step, decode_fp32=decode_fp32
            )
        elif canvas is not None:
            images = model.inpaint(part, canvas, on_step, decode_fp32=decode_fp32)
        else:
            images = model.txt2img(part, on_step, decode_fp32=decode_fp32)
        return images

    outputs = run_with_fault_handling(model, params, run)
    if canvas is not None:
        outputs = [composite(out, canvas) for out in outputs]
    elif source is not None:
        # Back to the input's own size when the run needed a multiple of 8.
        outputs = [
            out if out.size == source.size else out.resize(source.size, Image.Resampling.LANCZOS)
            for out in outputs
        ]
    return outputs


class WorkerBroken(Exception):
    """The device is in a state no job can recover from (a CUDA error other than OOM)."""


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def is_device_broken(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "AcceleratorError" or any(
        sign in text
        for sign in ("CUDA error", "device-side assert", "illegal memory access", "cuDNN error")
    )


def is_blank(image: Image.Image) -> bool:
    """All black: what NaNs from an overflowing half-precision VAE decode to."""
    return image.getbbox() is None  # no pixel has any non-zero channel


def run_with_fault_handling(
    model: Any, params: AnyParams, run: Callable[[AnyParams, bool], list[Image.Image]]
) -> list[Image.Image]:
    """Run a job's pipeline call through the GPU faults a job can recover from.

    Out of memory: free the cache, and run the images one at a time (same seeds, so the same
    images); if that too runs out, the job fails `out_of_memory` and the worker goes on.
    Black (NaN) output: run again decoding with the VAE in float32; still black, the job fails
    `invalid_output`. Any other CUDA error: `WorkerBroken` — the process must be replaced.
    """
    parts = [params]
    try:
        outputs = run(params, False)
    except Exception as exc:
        if is_device_broken(exc) and not is_out_of_memory(exc):
            raise WorkerBroken(str(exc)) from exc
        if not is_out_of_memory(exc):
            raise
        model.release()
        if params.n == 1:
            raise JobFailed(
                FailureCode.OUT_OF_MEMORY, "the device ran out of memory; try a smaller size"
            ) from None
        log.warning("out of memory with %d images at once; running them one by one", params.n)
        parts = [params.model_copy(update={"n": 1, "seed": seed}) for seed in params.seeds()]
        try:
            outputs = [image for part in parts for image in run(part, False)]
        except Exception as again:
            if not is_out_of_memory(again):
                raise
            model.release()
            raise JobFailed(
                FailureCode.OUT_OF_MEMORY,
                "the device ran out of memory even one image at a time; try a smaller size",
            ) from None
    if any(is_blank(image) for image in outputs):
        log.warning("black output (NaN in the decode); decoding again in float32")
        outputs = [image for part in parts for image in run(part, True)]
        if any(is_blank(image) for image in outputs):
            raise JobFailed(
                FailureCode.INVALID_OUTPUT,
                "the model produced black images (NaN), even decoded in float32",
            )
    return outputs


def _input(context: WorkerContext, record: JobRecord, name: str, mode: str) -> Image.Image:
    key = record.inputs.get(name)
    if key is None:
        raise JobFailed(FailureCode.INVALID_INPUT, f"the job has no {name}")
    try:
        data = context.storage.get(key)
    except Exception:
        raise JobFailed(
            FailureCode.INVALID_INPUT, f"the job's {name} is no longer stored"
        ) from None
    return Image.open(io.BytesIO(data)).convert(mode)


def _store(
    context: WorkerContext, record: JobRecord, params: AnyParams, outputs: list[Image.Image]
) -> list[StoredImage]:
    fmt = OutputFormat(params.output_format)
    stored = []
    for index, (image, seed) in enumerate(zip(outputs, params.seeds(), strict=True)):
        if index:
            _renew(context, record.id)
        metadata = {
            **params.model_dump(
                mode="json", exclude={"priority", "n", "webhook", "webhook_events"}
            ),
            "seed": seed,
            "job_id": record.id,
            "index": index,
        }
        key = job_key(record.owner, record.id, f"{index}.{fmt.extension}")
        context.storage.put(key, encode(image, fmt, metadata))
        stored.append(
            StoredImage(
                key=key,
                width=image.width,
                height=image.height,
                seed=seed,
                content_type=fmt.content_type,
            )
        )
    return stored
