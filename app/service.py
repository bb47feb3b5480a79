"""The job service: everything `POST /v1/jobs` and `GET /v1/jobs/{id}` do, without HTTP.

Routes parse the request and call this class; tests can call it directly.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app import metrics
from app.fairness import QueueShares
from app.scopes import EVERY_SCOPE, check_priority
from app.settings import AppSettings
from jobs import defaults, logs
from jobs.catalog import Catalog, ModelEntry
from jobs.checks import Misfit, check_fits, check_resolved, total_steps
from jobs.errors import InvalidRequest, JobNotCancelable, JobNotFound, ModelNotFound
from jobs.idempotency import IdempotencyKeyPending, IdempotencyKeys, fingerprint
from jobs.images import InputImage, decode_base64, load_image
from jobs.lifecycle import Lifecycle
from jobs.protocol import (
    IMAGE_FIELDS,
    AnyParams,
    JobStatus,
    JobType,
    OutpaintParams,
    Txt2ImgParams,
    Txt2VideoParams,
    is_job_id,
    new_job_id,
    parse_params,
    utcnow,
)
from jobs.queueing import JobQueues, live_workers
from jobs.records import JobRecord, JobStore, Progress
from jobs.storage import Storage, job_key
from jobs.views import job_view
from jobs.webhooks import Notices, check_url, resolve

log = logging.getLogger(__name__)

IDEMPOTENCY_WAIT_S = 5.0
"""How long a retry waits for an earlier request with its Idempotency-Key to make its job
(storing a large input can take seconds) before it is answered 409."""

IDEMPOTENCY_RETRY_AFTER_S = 2
"""`Retry-After` of that 409."""


@dataclass
class Submission:
    """A request as it arrived: the fields, and raw image bytes from multipart parts."""

    fields: dict[str, Any]
    files: dict[str, bytes]
    idempotency_key: str | None = None
    caller: str = "anonymous"
    """Who submits: idempotency keys and (with API keys) jobs belong to a caller."""
    scopes: frozenset[str] = EVERY_SCOPE
    """What the caller may do (`app.scopes`): `priority:high` to submit at high priority."""


@dataclass
class Accepted:
    record: JobRecord
    replay: bool = False
    """True when an Idempotency-Key matched an earlier submit and this is that job."""


class JobService:
    idempotency_wait_s = IDEMPOTENCY_WAIT_S

    def __init__(
        self,
        settings: AppSettings,
        catalog: Catalog,
        store: JobStore,
        queues: JobQueues,
        storage: Storage,
        shares: QueueShares | None = None,
    ) -> None:
        self.idempotency = IdempotencyKeys(store.redis)
        self.shares = shares
        """Each key's share of a model's queue (with API keys)."""
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.queues = queues
        self.storage = storage
        notices = Notices(storage, base_url=settings.public_url or "", url_ttl_s=settings.url_ttl_s)
        self.lifecycle = Lifecycle(queues, notices=notices, observe=metrics.observe_move)

    # -- submit ----------------------------------------------------------------------------

    def submit(self, submission: Submission) -> Accepted:
        fields = dict(submission.fields)
        raw_images: dict[str, object] = {n: fields.pop(n) for n in IMAGE_FIELDS if n in fields}
        params = _validate(fields)
        check_priority(params.priority, submission.scopes)
        model = self._model_for(params)
        params = self._resolve(params, model)
        images = self._load_images(params, raw_images, submission.files)
        work = self._work(params, images)
        if params.webhook is not None:
            host, port = check_url(params.webhook)
            resolve(host, port, self.settings.webhook_allow_private)

        job_id = new_job_id()
        key = submission.idempotency_key
        if key is not None:
            print_ = fingerprint(submission.fields, submission.files)
            earlier = self._claim(submission.caller, key, print_, job_id)
            if earlier is not None:
                return Accepted(earlier, replay=True)
        try:
            record = self._enqueue(job_id, params, model, images, work, submission.caller)
        except BaseException:
            if key is not None:
                self.idempotency.release(submission.caller, key, job_id)
            raise
        if key is not None and not self.idempotency.settle(submission.caller, key, print_, job_id):
            log.warning("job %s: its Idempotency-Key claim lapsed before the job was made", job_id)
        return Accepted(record)

    def _claim(self, caller: str, key: str, print_: str, job_id: str) -> JobRecord | None:
        """Take the key for `job_id` (None), or the earlier job that holds it. While the
        earlier request is still making its job, wait up to `idempotency_wait_s` for it;
        past that, `IdempotencyKeyPending` (409) tells the client when to come back."""
        deadline = time.monotonic() + self.idempotency_wait_s
        while True:
            claim = self.idempotency.claim(caller, key, print_, job_id)
            if not claim.replay:
                return None
            if not claim.pending:
                earlier = self.store.get(claim.job_id)
                if earlier is not None:
                    return earlier
                # The first job has expired: this request starts afresh under the key.
                self.idempotency.drop(caller, key, claim)
                continue
            if time.monotonic() > deadline:
                raise IdempotencyKeyPending(
                    "an earlier request with this Idempotency-Key is still being submitted; "
                    "retry shortly with the same key to get its job",
                    param="Idempotency-Key",
                    headers={"Retry-After": str(IDEMPOTENCY_RETRY_AFTER_S)},
                )
            time.sleep(0.05)

    def _work(self, params: AnyParams, images: dict[str, InputImage]) -> float:
        """The job's work in megapixel-steps, refused past the configured cap."""
        frames = 1
        if isinstance(params, Txt2ImgParams | Txt2VideoParams):
            width, height = params.width or 0, params.height or 0
            if isinstance(params, Txt2VideoParams):
                frames = params.num_frames or 1
        else:
            width, height = images["image"].width, images["image"].height
            if isinstance(params, OutpaintParams):
                width += params.outpaint.left + params.outpaint.right
                height += params.outpaint.top + params.outpaint.bottom
        work = width * height / 1e6 * frames * total_steps(params) * params.n
        cap = self.settings.max_work_mp_steps
        if work > cap:
            what = f"{frames} frames × {params.n} videos" if frames > 1 else f"{params.n} images"
            raise InvalidRequest(
                f"this job is {work:.0f} megapixel-steps of work ({width}x{height} pixels × "
                f"{total_steps(params)} steps × {what}); the most one job may ask "
                f"for is {cap:.0f}: lower the size, the steps, "
                + ("the frames or n" if frames > 1 else "or n")
            )
        return work

    def _enqueue(
        self,
        job_id: str,
        params: AnyParams,
        model: ModelEntry,
        images: dict[str, InputImage],
        work: float,
        owner: str,
    ) -> JobRecord:
        inputs = {}
        for name, image in images.items():
            key = job_key(owner, job_id, f"input-{name}.png")
            self.storage.put(key, image.png)
            inputs[name] = key
        record = JobRecord(
            id=job_id,
            type=params.type,
            model=model.id,
            status=JobStatus.QUEUED,
            created_at=utcnow(),
            progress=Progress(step=0, total_steps=total_steps(params)),
            params=params,
            inputs=inputs,
            timeout_s=self.settings.job_timeout(work),
            owner=owner,
            request_id=logs.request_id.get(),
        )
        if self.shares is not None:
            self.shares.reserve(owner, model.id, job_id)
        try:
            self.lifecycle.enqueue(record)
        except Exception:
            if self.shares is not None:
                self.shares.release(owner, model.id, job_id)
            raise
        return record

    def _model_for(self, params: AnyParams) -> ModelEntry:
        model = self.catalog.get(params.model)
        if model is None:
            known = ", ".join(self.catalog.by_id)
            raise ModelNotFound(
                f"model {params.model!r} is not served here; known models: {known}", param="model"
            )
        try:
            check_fits(self.catalog, model, params)
        except Misfit as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None
        return model

    def _resolve(self, params: AnyParams, model: ModelEntry) -> AnyParams:
        """Fill every default from the model's entry, and the seed, then validate again."""
        updates: dict[str, Any] = {
            "model": model.id,
            "steps": params.steps or model.default_steps,
            "scheduler": params.scheduler or model.scheduler,
            "guidance_scale": (
                params.guidance_scale
                if params.guidance_scale is not None
                else model.default_guidance
            ),
            "seed": params.seed
            if params.seed is not None
            else secrets.randbelow(defaults.SEED_MAX + 1),
            "negative_prompt": params.negative_prompt or "",
        }
        if params.webhook is not None and params.webhook_events is None:
            updates["webhook_events"] = ["completed"]
        if isinstance(params, Txt2ImgParams | Txt2VideoParams):
            updates["width"] = params.width or model.native_size[0]
            updates["height"] = params.height or model.native_size[1]
        if isinstance(params, Txt2VideoParams):
            updates["num_frames"] = params.num_frames or model.default_frames
            updates["fps"] = params.fps or model.default_fps
        resolved = _validate({**params.model_dump(mode="json"), **updates})
        try:
            check_resolved(model, resolved)
        except Misfit as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None
        return resolved

    def _load_images(
        self, params: AnyParams, raw: dict[str, object], files: dict[str, bytes]
    ) -> dict[str, InputImage]:
        wanted = [
            n
            for n in IMAGE_FIELDS
            if n == "image" and params.type.needs_image or n == "mask" and params.type.needs_mask
        ]
        for name in (*raw, *files):
            if name not in wanted:
                raise InvalidRequest(f"{name} is not accepted for {params.type}", param=name)
        limits = {
            "max_bytes": self.settings.max_image_bytes,
            "max_pixels": self.settings.max_image_pixels,
        }
        images: dict[str, InputImage] = {}
        for name in wanted:
            if name in files:
                data = files[name]
            elif name in raw:
                data = decode_base64(raw[name], name, self.settings.max_image_bytes)
            else:
                raise InvalidRequest(f"{name} is required for {params.type}", param=name)
            mode = "L" if name == "mask" else "RGB"
            images[name] = load_image(data, name, mode=mode, **limits)
        if "mask" in images:
            image, mask = images["image"], images["mask"]
            if mask.brightest < 128:
                raise InvalidRequest(
                    "mask has no white pixels, so nothing would be repainted; paint the areas "
                    "to repaint white",
                    param="mask",
                )
            if (mask.width, mask.height) != (image.width, image.height):
                raise InvalidRequest(
                    f"mask is {mask.width}x{mask.height} but image is "
                    f"{image.width}x{image.height}; they must be the same size",
                    param="mask",
                )
        if isinstance(params, OutpaintParams):
            image, pad = images["image"], params.outpaint
            width = image.width + pad.left + pad.right
            height = image.height + pad.top + pad.bottom
            if max(width, height) > defaults.SIZE_MAX:
                raise InvalidRequest(
                    f"the outpainted canvas would be {width}x{height}; each side must be at most "
                    f"{defaults.SIZE_MAX} pixels",
                    param="outpaint",
                )
        return images

    # -- read ------------------------------------------------------------------------------

    def get(self, job_id: str, caller: str | None = None) -> JobRecord:
        """The job, if it exists and (with `caller`) belongs to that caller: another key's job
        is answered exactly like a missing one."""
        record = self.store.get(job_id) if is_job_id(job_id) else None
        if record is None or (caller is not None and record.owner != caller):
            raise JobNotFound(f"no job {job_id!r} (jobs are kept for a limited time)")
        return record

    def view(self, record: JobRecord, base_url: str, operator: bool = False) -> dict[str, Any]:
        """The Job object of `docs/api.md`, with fresh signed URLs (and, for the `operator`,
        the worker that runs or ran it)."""
        position = None
        if record.status is JobStatus.QUEUED:
            position = self.queues.position(record)
        return job_view(
            record,
            self.storage,
            base_url=self.settings.public_url or base_url,
            url_ttl_s=self.settings.url_ttl_s,
            queue_position=position,
            show_worker=operator,
        )

    def cancel(self, job_id: str, caller: str | None = None) -> JobRecord:
        """Cancel a queued or running job; `JobNotCancelable` once it has ended.

        A queued job is taken off its queue; a running one is marked canceled here and its
        worker stops at the next step, when it sees the status.
        """
        record = self.get(job_id, caller)
        if self.lifecycle.cancel(record) is None:
            record = self.get(job_id)
            raise JobNotCancelable(
                f"job {job_id} has already ended ({record.status.value}); nothing to cancel"
            )
        return self.get(job_id)

    def models(self, operator: bool = False) -> list[dict[str, Any]]:
        """The catalogue with its live workers; only the `operator` sees their names."""
        workers = live_workers(self.queues.redis)
        return [
            {
                "id": m.id,
                "family": m.family,
                "tasks": list(m.tasks),
                "default": m.id == self.catalog.default_id,
                "description": m.description,
                "prompt_hint": m.prompt_hint,
                "native_size": list(m.native_size),
                "default_steps": m.default_steps,
                "default_guidance": m.default_guidance,
                "schedulers": list(m.schedulers),
                "default_scheduler": m.scheduler,
                **(
                    {
                        "default_frames": m.default_frames,
                        "max_frames": m.max_frames,
                        "default_fps": m.default_fps,
                    }
                    if JobType.TXT2VIDEO in m.tasks
                    else {}
                ),
                "adapters": [a.id for a in self.catalog.adapters_for(m)],
                "workers": len(workers.get(m.id, [])),
                # How the live workers run it: device, dtype, attention kernels, compile...
                "runtime": [
                    {"worker": w.get("name") if operator else None, **w["runtime"][m.id]}
                    for w in workers.get(m.id, [])
                    if isinstance(w.get("runtime"), dict) and m.id in w["runtime"]
                ],
            }
            for m in self.catalog.models
        ]


def _validate(fields: dict[str, Any]) -> AnyParams:
    try:
        return parse_params(fields)
    except ValidationError as exc:
        raise _invalid(exc) from None
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="type") from None


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this job type",
}


def _invalid(exc: ValidationError) -> InvalidRequest:
    """The first problem of a validation error as one sentence naming its field."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    param = ".".join(loc) if loc else None
    message = _MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    text = f"{param}: {message}" if param else message
    more = len(exc.errors()) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidRequest(text, param=param)
