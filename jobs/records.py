"""Job records in Redis and the status state machine.

A record is a hash at `keys.job(id)`; each field holds JSON. Status changes go through one
Lua script so that a transition is atomic and a terminal status is final, whichever API
replica or worker asks.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis
from pydantic import BaseModel, ConfigDict

from jobs import events, keys
from jobs.protocol import AnyParams, JobStatus, JobType, parse_params, utcnow


class Progress(BaseModel):
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    """Seconds the running job still needs, estimated from its steps so far."""

    @property
    def fraction(self) -> float:
        return round(self.step / self.total_steps, 4) if self.total_steps else 0.0


class StoredImage(BaseModel):
    """An output image as the record keeps it: a storage key, not a URL."""

    key: str
    width: int
    height: int
    seed: int
    content_type: str


class JobError(BaseModel):
    code: str
    message: str


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
    params: dict[str, Any]
    inputs: dict[str, str] = {}
    """Storage keys of the input images by field name (`image`, `mask`)."""
    images: list[StoredImage] | None = None
    error: JobError | None = None
    worker: str | None = None
    timings: dict[str, float] = {}

    def typed_params(self) -> AnyParams:
        return parse_params(self.params)


_FIELDS = tuple(JobRecord.model_fields)

# KEYS[1] the record, KEYS[2] its event channel; ARGV[1] the new status; ARGV[2] the statuses
# it may come from, comma-separated; ARGV[3] the message to publish; ARGV[4..] field/value
# pairs to set with it. Returns the previous status, or false when the record is missing or
# the move is not allowed.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
local from = ',' .. ARGV[2] .. ','
if not string.find(from, ',' .. current .. ',', 1, true) then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 4))
redis.call('PUBLISH', KEYS[2], ARGV[3])
return current
"""

# Progress is written only while the job runs, so a late step cannot touch an ended job.
# KEYS[1] the record, KEYS[2] its channel; ARGV[1] progress, ARGV[2] "running", ARGV[3] message.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""


def _encode(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, separators=(",", ":"))


class JobStore:
    """Reads and writes job records. Works with a plain `redis.Redis` (decode_responses off)."""

    def __init__(self, connection: redis.Redis, ttl_s: int) -> None:
        self.redis = connection
        self.ttl_s = ttl_s
        self._transition = connection.register_script(_TRANSITION)
        self._progress = connection.register_script(_PROGRESS)

    def create(self, record: JobRecord, pipe: redis.client.Pipeline) -> None:
        """Queue the record's write on `pipe`, so that it lands together with the enqueue."""
        key = keys.job(record.id)
        pipe.hset(key, mapping={f: _encode(getattr(record, f)) for f in _FIELDS})
        pipe.expire(key, self.ttl_s)

    def get(self, job_id: str) -> JobRecord | None:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.job(job_id)))
        if not raw:
            return None
        return JobRecord.model_validate(
            {k.decode(): json.loads(v) for k, v in raw.items() if k.decode() in _FIELDS}
        )

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        allowed_from: tuple[JobStatus, ...],
        **fields: Any,
    ) -> JobStatus | None:
        """Move a job to `to` if its status is one of `allowed_from`, setting `fields` with it.

        The timestamp of the new status is set here. Returns the previous status, or None when
        the job is missing or not in an allowed status.
        """
        if to is JobStatus.RUNNING:
            fields.setdefault("started_at", utcnow())
        elif to.is_terminal():
            fields.setdefault("finished_at", utcnow())
        # Statuses are compared in their stored (JSON) form.
        args = [
            _encode(to.value),
            ",".join(_encode(s.value) for s in allowed_from),
            events.status_message(to.value),
        ]
        for name, value in fields.items():
            if name not in _FIELDS:
                raise ValueError(f"no record field {name!r}")
            args += [name, _encode(value)]
        previous = self._transition(keys=[keys.job(job_id), events.channel(job_id)], args=args)
        return JobStatus(json.loads(previous)) if previous else None

    def set_progress(self, job_id: str, progress: Progress) -> bool:
        """Write and publish progress; False (nothing written) when the job is not running."""
        message = json.dumps(
            {"event": "progress", **progress.model_dump(), "fraction": progress.fraction},
            separators=(",", ":"),
        )
        running = _encode(JobStatus.RUNNING.value)
        written = self._progress(
            keys=[keys.job(job_id), events.channel(job_id)],
            args=[_encode(progress), running, message],
        )
        return bool(written)

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.redis.hget(keys.job(job_id), "status")
        return JobStatus(json.loads(cast(bytes, raw))) if raw else None
