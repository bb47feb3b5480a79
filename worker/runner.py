"""Running one job: record → warm pipeline → stored images → record.

The runner re-validates the job's params (the API checked them, but the record crossed a
process boundary), moves the job through its statuses, writes progress as it goes and stores
the results under keys derived from the job id, so a job that runs twice writes them once.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from PIL import Image
from pydantic import ValidationError

from jobs import defaults, logs, webhooks
from jobs.batching import Batcher, batch_key, describe
from jobs.errors import FailureCode
from jobs.protocol import (
    AnyParams,
    ImageParams,
    Img2ImgParams,
    InpaintParams,
    JobStatus,
    OutpaintParams,
    OutputFormat,
    Txt2ImgParams,
    Txt2VideoParams,
)
from jobs.queueing import JobQueues
from jobs.records import JobError, JobRecord, JobStore, Progress, StoredImage
from jobs.storage import Storage, job_key
from worker import metrics
from worker.adapters import UnknownAdapter
from worker.batched import supports_batching, txt2img_many
from worker.imaging import composite, encode, inpaint_canvas, outpaint_canvas
from worker.video import MP4_CONTENT_TYPE, encode_mp4, encode_webp

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

    batcher: Batcher | None = None
    """Takes compatible queued jobs along with the one being run (None: no batching)."""
    batch_max: int = 1
    """The most images of one batched pipeline call."""
    batch_max_pixels: int = 0
    """The most output pixels of one batched pipeline call."""
    batch_wait_s: float = 0.0
    """How long a job waits for companions to be queued."""

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
    """Called after each denoising step; at most every `PROGRESS_MIN_INTERVAL_S` (and always
    at the last step) it renews the job's lease (the heartbeat that tells the reapers this
    worker is alive), writes and publishes progress, and stops a job that is no longer this
    worker's to run (canceled, or taken over after a lost lease). Fast steps cost no Redis
    round trip in between."""

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
        # Redis is touched at most every PROGRESS_MIN_INTERVAL_S (and at the last step): the
        # lease lasts seconds, and a cancel is seen within that interval.
        if step >= total or now - self._last >= defaults.PROGRESS_MIN_INTERVAL_S:
            self._last = now
            elapsed = now - self.started
            eta = round(elapsed / step * (total - step), 2) if step else None
            progress = Progress(step=step, total_steps=total, eta_s=eta)
            if not self.store.set_progress(self.job_id, progress, self.worker):
                raise JobCanceled(self.job_id)
            if self.on_progress is not None and (
                step >= total or now - self._last_hook >= defaults.WEBHOOK_PROGRESS_INTERVAL_S
            ):
                self._last_hook = now
                self.on_progress(progress)
        if self.give_back is not None and self.give_back():
            raise JobGivenBack(self.job_id)


def execute(context: WorkerContext, job_id: str) -> str:
    """Run a job to its end status; never raises for a failure of the job itself.

    With micro-batching on, compatible queued jobs are taken along and run in the same
    pipeline call (see `jobs.batching`); each still ends, and is recorded, on its own.
    """
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
        companions = _companions(context, record)
        if companions:
            return _execute_batch(context, [record, *companions])
        return _execute(context, record)
    finally:
        logs.request_id.reset(token)


def _begin(context: WorkerContext, record: JobRecord) -> None:
    logs.transition(
        record.id,
        record.model,
        record.type.value,
        "running",
        worker=context.name,
        attempts=record.attempts or None,
    )
    _notify(context, record, "start")
    metrics.QUEUED_SECONDS.labels(record.model).observe(_age_s(record.created_at))


def _end(context: WorkerContext, record: JobRecord, outcome: str, elapsed: float) -> None:
    labels = (record.type.value, record.model)
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


def _execute(context: WorkerContext, record: JobRecord) -> str:
    _begin(context, record)
    metrics.BATCH_SIZE.observe(int(record.params.get("n", 1)))
    started = time.perf_counter()
    outcome = _outcome(context, record)
    _end(context, record, outcome, time.perf_counter() - started)
    return outcome


# -- micro-batching ------------------------------------------------------------------------


def _companions(context: WorkerContext, lead: JobRecord) -> list[JobRecord]:
    """Queued jobs that can share `lead`'s pipeline call, claimed for this worker."""
    batcher = context.batcher
    model = context.models.get(lead.model)
    if batcher is None or model is None or not supports_batching(model):
        return []
    try:
        params = lead.typed_params()
        key_of = getattr(model, "batch_key", batch_key)
        wanted = key_of(params)
        if wanted is None:
            return []
        width, height = getattr(params, "width", 0), getattr(params, "height", 0)
        images_max = min(context.batch_max, context.batch_max_pixels // max(1, width * height))
        room = images_max - params.n
        taken: list[JobRecord] = []
        deadline = time.monotonic() + context.batch_wait_s
        while room > 0:
            found = batcher.take(lead, wanted, room, key_of)
            taken += found
            room -= sum(int(r.params.get("n", 1)) for r in found)
            if room <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        return taken
    except Exception:
        # Batching is an optimisation: the job runs alone rather than not at all.
        log.exception("looking for jobs to batch with %s failed; running it alone", lead.id)
        return []


def _execute_batch(context: WorkerContext, records: list[JobRecord]) -> str:
    """Run several compatible jobs in one pipeline call; each ends on its own."""
    images = sum(int(r.params.get("n", 1)) for r in records)
    log.info("batch of %d jobs, %d images: %s", len(records), images, describe(records))
    _extend_time_limit(sum(r.timeout_s or 0 for r in records))
    for record in records:
        _begin(context, record)
    metrics.BATCH_SIZE.observe(images)
    metrics.BATCH_JOBS.observe(len(records))
    started = time.perf_counter()
    outcomes = _batch_outcomes(context, records)
    elapsed = time.perf_counter() - started
    for record in records:
        _end(context, record, outcomes[record.id], elapsed)
    return outcomes[records[0].id]


def _extend_time_limit(seconds: int) -> None:
    """Give a batch the time its jobs would have had one after another: RQ's time limit is
    the lead job's, armed as an alarm signal around the whole call."""
    import signal
    import threading

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return
    remaining = signal.alarm(0)
    if remaining:
        signal.alarm(max(remaining, seconds))


def _batch_outcomes(context: WorkerContext, records: list[JobRecord]) -> dict[str, str]:
    model = context.models[records[0].model]
    params = [cast(Txt2ImgParams, r.typed_params()) for r in records]
    monitors = {
        r.id: StepMonitor(
            context.store,
            r.id,
            context.name,
            _progress_hook(context, r),
            give_back=context.draining_past_deadline,
        )
        for r in records
    }
    dropped: set[str] = set()

    def on_step(step: int, total: int) -> None:
        for record in records:
            if record.id in dropped:
                continue
            try:
                monitors[record.id](step, total)
            except JobCanceled:
                # Its images are dropped when the call ends; the others go on.
                dropped.add(record.id)
        if len(dropped) == len(records):
            raise JobCanceled(records[0].id)

    def canceled(record: JobRecord) -> str:
        return _stopped(context, record)

    batch_images = sum(p.n for p in params)
    started = time.perf_counter()
    try:
        groups = txt2img_many(model, params, on_step)
    except JobCanceled:
        model.release()
        return {r.id: canceled(r) for r in records}
    except JobGivenBack:
        outcomes = {}
        for record in records:
            if record.id in dropped:
                outcomes[record.id] = canceled(record)
            else:
                _give_back(context, record)
                outcomes[record.id] = GIVEN_BACK
        return outcomes
    except Exception as exc:
        if is_device_broken(exc) and not is_out_of_memory(exc):
            log.critical("the device is broken (%s): giving the batch back", exc)
            for record in records:
                _give_back(context, record)
            context.broken = str(exc)
            return {r.id: GIVEN_BACK for r in records}
        # Out of memory or anything else: each job alone, with the single run's own handling.
        log.warning("the batched call failed (%s); running its jobs one by one", exc)
        model.release()
        return {r.id: canceled(r) if r.id in dropped else _outcome(context, r) for r in records}
    call_s = time.perf_counter() - started
    outcomes = {}
    for record, images in zip(records, groups, strict=True):
        if record.id in dropped:
            outcomes[record.id] = canceled(record)
        elif any(is_blank(image) for image in images):
            # Alone, it gets the float32 decode retry.
            outcomes[record.id] = _outcome(context, record)
        else:
            outcomes[record.id] = _outcome(
                context, record, Batched(images, len(records), batch_images, call_s)
            )
    return outcomes


def _age_s(timestamp: str) -> float:
    created = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - created).total_seconds())


@dataclass(frozen=True)
class Batched:
    """What a batched pipeline call made for one of its jobs."""

    images: list[Image.Image]
    jobs: int
    """Jobs that shared the call."""
    images_in_call: int
    call_s: float
    """Seconds of the shared call."""


def _outcome(context: WorkerContext, record: JobRecord, batched: Batched | None = None) -> str:
    """Run the job (or store what a batched call made for it) and record how it ended."""
    store, job_id = context.store, record.id
    started = time.perf_counter()
    try:
        images = _run(context, record, batched.images if batched else None)
    except JobCanceled:
        _release(context, record)
        return _stopped(context, record)
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
    except UnknownAdapter as exc:
        # The catalogue this worker loaded differs from the API's (a rollout in progress).
        _fail(context, job_id, FailureCode.MODEL_UNAVAILABLE, str(exc))
        return FailureCode.MODEL_UNAVAILABLE.value
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
    if batched is not None:
        timings["run_s"] = round(timings["run_s"] + batched.call_s, 4)
        timings["batch_jobs"] = batched.jobs
        timings["batch_images"] = batched.images_in_call
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


def _stopped(context: WorkerContext, record: JobRecord) -> str:
    """Log a run stopped because its job was canceled; its outcome."""
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


def _progress_hook(context: WorkerContext, record: JobRecord) -> Callable[[Progress], None] | None:
    """Queues the job's `progress` webhooks, if it asked for them."""
    if webhooks.wanted(record.params, "progress") is None:
        return None

    def on_progress(progress: Progress) -> None:
        view = {**progress.model_dump(), "fraction": progress.fraction}
        try:
            webhooks.notify_progress(context.store.redis, record, view)
        except Exception:  # a webhook never fails the job
            log.exception("could not queue a progress webhook of %s", record.id)

    return on_progress


def _run(
    context: WorkerContext, record: JobRecord, generated: list[Image.Image] | None = None
) -> list[StoredImage]:
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
    if generated is not None:
        _renew(context, record.id)
        return _store(context, record, cast(ImageParams, params), generated)
    on_step = StepMonitor(
        context.store,
        record.id,
        context.name,
        _progress_hook(context, record),
        give_back=context.draining_past_deadline,
    )
    if isinstance(params, Txt2VideoParams):
        videos = _generate_videos(params, model, on_step)
        _renew(context, record.id)
        return _store_videos(context, record, params, videos)
    outputs = _generate(context, record, params, model, on_step)
    _renew(context, record.id)
    return _store(context, record, params, outputs)


def _renew(context: WorkerContext, job_id: str) -> None:
    """Renew the lease between phases that have no steps (decoding, encoding, storing)."""
    if not context.store.heartbeat(job_id, context.name):
        raise JobCanceled(job_id)


def _generate_videos(
    params: Txt2VideoParams, model: Any, on_step: StepMonitor
) -> list[list[Image.Image]]:
    if not hasattr(model, "txt2video"):
        raise JobFailed(FailureCode.INVALID_INPUT, f"model {params.model} does not make videos")

    def run(part: Txt2VideoParams, decode_fp32: bool) -> list[list[Image.Image]]:
        videos: list[list[Image.Image]] = model.txt2video(part, on_step, decode_fp32=decode_fp32)
        return videos

    return run_with_fault_handling(model, params, run, is_bad=_all_blank)


def _all_blank(frames: list[Image.Image]) -> bool:
    return all(is_blank(frame) for frame in frames)


def _generate(
    context: WorkerContext,
    record: JobRecord,
    params: ImageParams,
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

    def run(part: ImageParams, decode_fp32: bool) -> list[Image.Image]:
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


P = TypeVar("P", bound=AnyParams)
Output = TypeVar("Output")


def run_with_fault_handling(
    model: Any,
    params: P,
    run: Callable[[P, bool], Sequence[Output]],
    is_bad: Callable[[Output], bool] = is_blank,  # type: ignore[assignment]
) -> list[Output]:
    """Run a job's pipeline call through the GPU faults a job can recover from.

    Out of memory: free the cache, and run the images one at a time (same seeds, so the same
    images); if that too runs out, the job fails `out_of_memory` and the worker goes on.
    Black (NaN) output: run again decoding with the VAE in float32; still black, the job fails
    `invalid_output`. Any other CUDA error: `WorkerBroken` — the process must be replaced.
    """
    parts = [params]
    try:
        outputs = list(run(params, False))
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
        parts = [
            cast(P, params.model_copy(update={"n": 1, "seed": seed})) for seed in params.seeds()
        ]
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
    if any(is_bad(output) for output in outputs):
        log.warning("black output (NaN in the decode); decoding again in float32")
        outputs = [output for part in parts for output in run(part, True)]
        if any(is_bad(output) for output in outputs):
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


def _metadata(params: AnyParams, record: JobRecord, seed: int, index: int) -> dict[str, Any]:
    return {
        **params.model_dump(mode="json", exclude={"priority", "n", "webhook", "webhook_events"}),
        "seed": seed,
        "job_id": record.id,
        "index": index,
    }


def _store_videos(
    context: WorkerContext,
    record: JobRecord,
    params: Txt2VideoParams,
    videos: list[list[Image.Image]],
) -> list[StoredImage]:
    fps = params.fps or 8
    stored = []
    for index, (frames, seed) in enumerate(zip(videos, params.seeds(), strict=True)):
        if index:
            _renew(context, record.id)
        key = job_key(record.owner, record.id, f"{index}.mp4")
        webp_key = job_key(record.owner, record.id, f"{index}.webp")
        context.storage.put(key, encode_mp4(frames, fps))
        context.storage.put(webp_key, encode_webp(frames, fps))
        width, height = frames[0].size
        stored.append(
            StoredImage(
                key=key,
                width=width,
                height=height,
                seed=seed,
                content_type=MP4_CONTENT_TYPE,
                num_frames=len(frames),
                fps=fps,
                webp_key=webp_key,
            )
        )
    return stored


def _store(
    context: WorkerContext, record: JobRecord, params: ImageParams, outputs: list[Image.Image]
) -> list[StoredImage]:
    fmt = OutputFormat(params.output_format)
    stored = []
    for index, (image, seed) in enumerate(zip(outputs, params.seeds(), strict=True)):
        if index:
            _renew(context, record.id)
        metadata = _metadata(params, record, seed, index)
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
