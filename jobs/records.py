"""Job records in Redis, and reading them.

A record is a hash at `keys.job(id)`; each field holds JSON. Only `jobs.lifecycle` writes
one: each of its moves changes the status and does what goes with it in one atomic step.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis
from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer, field_validator
from pydantic_core import to_jsonable_python

from jobs import keys
from jobs.protocol import AnyParams, JobStatus, JobType, Priority, parse_params


class Progress(BaseModel):
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    """Seconds the running job still needs, estimated from its steps so far."""

    @property
    def fraction(self) -> float:
        return round(self.step / self.total_steps, 4) if self.total_steps else 0.0


class StoredImage(BaseModel):
    """An output image (or video) as the record keeps it: a storage key, not a URL."""

    key: str
    width: int
    height: int
    seed: int
    content_type: str
    num_frames: int | None = None
    """Videos only: frames in the clip."""
    fps: int | None = None
    """Videos only: its frame rate."""
    webp_key: str | None = None
    """Videos only: the same clip as an animated WebP."""


class JobError(BaseModel):
    code: str
    message: str


class UnreadableParams(BaseModel):
    """Stored params that do not validate (written behind the API's back, or by a release
    with other rules): the record stays readable, and a worker fails the job with `problem`."""

    model_config = ConfigDict(frozen=True)

    data: dict[str, Any]
    problem: str
    # What is read of every job's params: an unreadable job has one image and no webhook.
    n: int = 1
    webhook: None = None
    webhook_events: None = None

    @property
    def priority(self) -> Priority:
        value = self.data.get("priority")
        return Priority(value) if value in tuple(Priority) else Priority.NORMAL


class JobRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    type: JobType
    model: str
    status: JobStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress = Progress()
    params: AnyParams | UnreadableParams
    """The typed params of the job's type, validated when the record is read."""
    inputs: dict[str, str] = {}
    """Storage keys of the input images by field name (`image`, `mask`)."""
    images: list[StoredImage] | None = None
    error: JobError | None = None
    worker: str | None = None
    request_id: str | None = None
    """The id of the request that submitted the job, for following it through the logs."""
    owner: str = "anonymous"
    """The API key (by name) that submitted the job; only it may see the job."""
    timeout_s: int | None = None
    """How long the job may run, derived from its work when it was accepted."""
    rq_id: str | None = None
    """The RQ job that carries this job when it is not the first (a re-run gets a fresh one,
    so the bookkeeping of the run it replaces cannot touch it)."""
    attempts: int = 0
    """How many times a worker was lost while running this job (it is re-run until the
    poison limit)."""
    timings: dict[str, float] = {}

    @field_validator("params", mode="before")
    @classmethod
    def _typed(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        try:
            return parse_params(value)
        except (ValidationError, ValueError) as exc:
            return UnreadableParams(data=dict(value), problem=str(exc))

    @field_serializer("params")
    def _dump_params(self, params: AnyParams | UnreadableParams) -> dict[str, Any]:
        return _params_data(params)

    def params_data(self) -> dict[str, Any]:
        """The params as stored and shown (the normalised request), as JSON data."""
        return _params_data(self.params)

    @property
    def priority(self) -> Priority:
        return self.params.priority

    def wants_webhook(self, event: str) -> str | None:
        """The URL to notify of `event` (`start`, `progress`, `completed`), if the job
        asked for it."""
        params = self.params
        if params.webhook is None:
            return None
        return params.webhook if event in (params.webhook_events or ("completed",)) else None


def _params_data(params: AnyParams | UnreadableParams) -> dict[str, Any]:
    if isinstance(params, UnreadableParams):
        return params.data
    return params.model_dump(mode="json")


FIELDS = tuple(JobRecord.model_fields)


def encode(record: JobRecord) -> dict[str, str]:
    """The record as its hash holds it: each field as JSON."""
    return {name: dump(value) for name, value in record.model_dump(mode="json").items()}


def dump(value: Any) -> str:
    """One field's stored form (JSON, compact); statuses are compared in this form."""
    return json.dumps(to_jsonable_python(value), separators=(",", ":"))


class JobStore:
    """Reads job records. Works with a plain `redis.Redis` (decode_responses off)."""

    def __init__(self, connection: redis.Redis, ttl_s: int, lease_s: float = 15.0) -> None:
        self.redis = connection
        self.ttl_s = ttl_s
        self.lease_s = lease_s

    def get(self, job_id: str) -> JobRecord | None:
        return self.parse(cast(dict[bytes, bytes], self.redis.hgetall(keys.job(job_id))))

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Records of several jobs in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.job(job_id))
            raws = cast(list[dict[bytes, bytes]], pipe.execute())
        return [self.parse(raw) for raw in raws]

    @staticmethod
    def parse(raw: dict[bytes, bytes]) -> JobRecord | None:
        """A record from its hash as HGETALL returns it (empty: no such job)."""
        if not raw:
            return None
        return JobRecord.model_validate(
            {k.decode(): json.loads(v) for k, v in raw.items() if k.decode() in FIELDS}
        )

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.redis.hget(keys.job(job_id), "status")
        return JobStatus(json.loads(cast(bytes, raw))) if raw else None
