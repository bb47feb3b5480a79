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

    def typed_params(self) -> AnyParams:
        return parse_params(self.params)


_FIELDS = tuple(JobRecord.model_fields)

# KEYS: the record, its event channel, the running set, its lease. ARGV[1] the new status;
# ARGV[2] the statuses it may come from, comma-separated; ARGV[3] the message to publish;
# ARGV[4] the worker that must hold the job ('' for anyone); ARGV[5] the worker taking the
# lease (moving to running); ARGV[6] the lease in ms; ARGV[7] the job id; ARGV[8..]
# field/value pairs to set with it. Returns the previous status, or false when the record is
# missing or the move is not allowed.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return false end
local from = ',' .. ARGV[2] .. ','
if not string.find(from, ',' .. current .. ',', 1, true) then return false end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[4] then return false end
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 8))
if ARGV[1] == '"running"' then
  redis.call('SADD', KEYS[3], ARGV[7])
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
else
  redis.call('SREM', KEYS[3], ARGV[7])
  redis.call('DEL', KEYS[4])
end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return current
"""

# A worker's word that it still runs the job: renews the lease, and tells it whether the job
# is still its own (not canceled, not taken over after its lease ran out).
# KEYS: the record, its lease. ARGV: the worker, the lease in ms.
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= '"running"' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Progress: a heartbeat that also writes and publishes the step.
# KEYS: the record, its lease, its channel. ARGV: worker, lease ms, progress, message.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') ~= '"running"' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
"""


def _encode(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, separators=(",", ":"))


class JobStore:
    """Reads and writes job records. Works with a plain `redis.Redis` (decode_responses off)."""

    def __init__(self, connection: redis.Redis, ttl_s: int, lease_s: float = 15.0) -> None:
        self.redis = connection
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self._transition = connection.register_script(_TRANSITION)
        self._heartbeat = connection.register_script(_HEARTBEAT)
        self._progress = connection.register_script(_PROGRESS)

    def create(self, record: JobRecord, pipe: redis.client.Pipeline) -> None:
        """Queue the record's write on `pipe`, so that it lands together with the enqueue."""
        key = keys.job(record.id)
        pipe.hset(key, mapping={f: _encode(getattr(record, f)) for f in _FIELDS})
        pipe.expire(key, self.ttl_s)

    def get(self, job_id: str) -> JobRecord | None:
        return self.parse(cast(dict[bytes, bytes], self.redis.hgetall(keys.job(job_id))))

    @staticmethod
    def parse(raw: dict[bytes, bytes]) -> JobRecord | None:
        """A record from its hash as HGETALL returns it (empty: no such job)."""
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
        holder: str | None = None,
        **fields: Any,
    ) -> JobStatus | None:
        """Move a job to `to` if its status is one of `allowed_from` (and, with `holder`, if
        that worker holds it), setting `fields` with it.

        The timestamp of the new status is set here; moving to running takes the lease for
        `fields["worker"]`. Returns the previous status, or None when the job is missing or
        not in an allowed status.
        """
        lease_holder = ""
        if to is JobStatus.RUNNING:
            if not fields.get("worker"):
                raise ValueError("a job moves to running with the worker that runs it")
            fields.setdefault("started_at", utcnow())
            lease_holder = _encode(fields["worker"])
        elif to.is_terminal():
            fields.setdefault("finished_at", utcnow())
        # Statuses are compared in their stored (JSON) form.
        args = [
            _encode(to.value),
            ",".join(_encode(s.value) for s in allowed_from),
            events.status_message(to.value),
            _encode(holder) if holder is not None else "",
            lease_holder,
            str(int(self.lease_s * 1000)),
            job_id,
        ]
        for name, value in fields.items():
            if name not in _FIELDS:
                raise ValueError(f"no record field {name!r}")
            args += [name, _encode(value)]
        previous = self._transition(
            keys=[keys.job(job_id), events.channel(job_id), keys.RUNNING, keys.lease(job_id)],
            args=args,
        )
        return JobStatus(json.loads(previous)) if previous else None

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Renew `worker`'s lease on the job; False when the job is no longer its to run."""
        lease_ms = str(int(self.lease_s * 1000))
        alive = self._heartbeat(
            keys=[keys.job(job_id), keys.lease(job_id)], args=[_encode(worker), lease_ms]
        )
        return bool(alive)

    def set_progress(self, job_id: str, progress: Progress, worker: str) -> bool:
        """Write and publish progress, renewing the lease; False (nothing written) when the
        job is no longer `worker`'s to run."""
        message = json.dumps(
            {"event": "progress", **progress.model_dump(), "fraction": progress.fraction},
            separators=(",", ":"),
        )
        written = self._progress(
            keys=[keys.job(job_id), keys.lease(job_id), events.channel(job_id)],
            args=[_encode(worker), str(int(self.lease_s * 1000)), _encode(progress), message],
        )
        return bool(written)

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.redis.hget(keys.job(job_id), "status")
        return JobStatus(json.loads(cast(bytes, raw))) if raw else None
