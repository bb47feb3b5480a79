"""The one writer of a job's status: every move of every job goes through here.

Each move is one Lua script call that checks the job may make it (its status, the worker
holding it, what the caller saw) and then writes everything that goes with it, or nothing:
the record, the running set and the lease, the index of queued jobs, the RQ job and its place
on a queue, the pub/sub event and the webhook delivery. The process that made the move then
writes its log line and its metric. The moves, and who makes them:

    enqueue      → queued     the API, on submit
    start        → running    a worker, for the job it dequeued, or for a batch companion it
                              takes off its queue (`take_from_queue`)
    progress     (running)    a worker, at its steps: progress written, leases renewed
    succeed      → succeeded  the worker holding the job
    fail         → failed     the worker holding the job
    expire       → failed     the worker holding the job, past its time limit (`timeout`)
    cancel       → canceled   the API
    give_back    → queued     a worker that stops, or whose device broke (front of the queue)
    recover      → queued     a reaper: a running job whose lease ran out (or → failed,
                              `worker_lost`, at the poison limit); a queued job on no queue

It runs past 400 lines on purpose: the moves share one script and one step (`_step`), and
keeping every writer of a status in one file is what makes "one writer" checkable by reading.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from rq.job import Job
from rq.queue import Queue

from jobs import events, keys, logs, webhooks
from jobs.errors import FailureCode
from jobs.protocol import JobStatus, utcnow
from jobs.queueing import JobQueues
from jobs.records import JobError, JobRecord, Progress, StoredImage, dump, encode

# One move of one job. KEYS: 1 the record, 2 its event channel, 3 the running set, 4 its lease,
# 5 the index of queued jobs, 6 its RQ queue, 7 RQ's set of queues, 8 the webhook outbox's due
# set. ARGV[1]: the move, as JSON (see `Lifecycle._step`); ARGV[2..]: the hash of the RQ job
# to push, if any. Values are compared and written in their stored (JSON) form. Returns the
# status the job had ('new' for an enqueue), or false when the move is not allowed.
_MOVE = """
local m = cjson.decode(ARGV[1])
local record = KEYS[1]
local current = redis.call('HGET', record, 'status')
if m.create then
  if current then return false end
  redis.call('HSET', record, unpack(m.set))
  redis.call('EXPIRE', record, m.ttl)
  current = 'new'
else
  if not current then return false end
  local allowed = false
  for _, status in ipairs(m.from) do allowed = allowed or status == current end
  if not allowed then return false end
  for field, value in pairs(m.expect) do
    if redis.call('HGET', record, field) ~= value then return false end
  end
  if m.lease_lost and redis.call('EXISTS', KEYS[4]) == 1 then return false end
  -- The RQ job that carries the job now: the job id, or the last re-run's.
  local rq = redis.call('HGET', record, 'rq_id')
  rq = (rq and rq ~= 'null') and cjson.decode(rq) or m.job
  if m.off_queue and redis.call('LPOS', KEYS[6], rq) then return false end
  if m.pull and current == '"queued"' then
    -- RQ's copy is left to expire: deleting it would race with a worker's bookkeeping.
    redis.call('LREM', KEYS[6], 0, rq)
    redis.call('EXPIRE', m.rq_prefix .. rq, m.pull)
  end
  redis.call('HSET', record, 'status', m.to, unpack(m.set))
end
if m.to == '"running"' then
  redis.call('SADD', KEYS[3], m.job)
  redis.call('SET', KEYS[4], m.lease[1], 'PX', m.lease[2])
elseif current == '"running"' then
  redis.call('SREM', KEYS[3], m.job)
  redis.call('DEL', KEYS[4])
end
if m.to == '"queued"' then
  redis.call('ZADD', KEYS[5], m.now, m.job)
elseif current == '"queued"' then
  redis.call('ZREM', KEYS[5], m.job)
end
if m.push then
  redis.call('HSET', m.rq_prefix .. m.push.id, unpack(ARGV, 2))
  redis.call('SADD', KEYS[7], KEYS[6])
  redis.call(m.push.front and 'LPUSH' or 'RPUSH', KEYS[6], m.push.id)
end
if not m.create then redis.call('PUBLISH', KEYS[2], m.message) end
if m.webhook then
  redis.call('SET', m.webhook.key, m.webhook.body, 'EX', m.webhook.ttl)
  redis.call('ZADD', KEYS[8], m.now, m.webhook.id)
end
return current
"""

# Progress and leases of the jobs one worker holds, in one step. KEYS[1] the webhook outbox's
# due set, then per job its record, lease and channel. ARGV: the worker, the lease in ms, now,
# the TTL of a webhook delivery, then per job its progress ('' to only renew the lease), its
# message, and a progress webhook delivery's key and body ('' for none). Returns per job 1
# while it is still this worker's to run, else 0 (canceled, or taken over after a lost lease),
# and then nothing is written for it.
_PROGRESS = """
local held = {}
for i = 1, (#KEYS - 1) / 3 do
  local record, lease, channel = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local a = 4 * i + 1
  local state = redis.call('HMGET', record, 'status', 'worker')
  if state[1] == '"running"' and state[2] == ARGV[1] then
    redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    if ARGV[a] ~= '' then
      redis.call('HSET', record, 'progress', ARGV[a])
      redis.call('PUBLISH', channel, ARGV[a + 1])
    end
    if ARGV[a + 2] ~= '' then
      redis.call('SET', ARGV[a + 2], ARGV[a + 3], 'EX', ARGV[4])
      redis.call('ZADD', KEYS[1], ARGV[3], cjson.decode(ARGV[a + 3]).id)
    end
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

# A job in the running set that is not running, or in the queued index that is not queued (its
# record expired): forgotten, unless it moved back meanwhile. KEYS: the record, the running
# set, the queued index. ARGV: the job id.
_UNTRACK = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"running"' then redis.call('SREM', KEYS[2], ARGV[1]) end
if status ~= '"queued"' then redis.call('ZREM', KEYS[3], ARGV[1]) end
return status
"""

REQUEUED = "requeued"
LOST = "failed"


@dataclass(frozen=True)
class Move:
    """A move that was made, for the log and the metrics of the process that made it."""

    name: str
    before: JobRecord
    """The job as the caller knew it."""
    after: JobRecord
    """The job as the move left it (progress as the caller knew it)."""
    previous: JobStatus | None
    """The status it had (None for an enqueue)."""


class Lifecycle:
    def __init__(
        self,
        queues: JobQueues,
        *,
        notices: webhooks.Notices | None = None,
        observe: Callable[[Move], None] | None = None,
    ) -> None:
        self.queues = queues
        self.store = queues.store
        self.redis = queues.redis
        self.notices = notices
        """Writes the webhook deliveries of moves (None: no webhooks from this process)."""
        self.observe = observe
        """Records each move in the process's metrics."""
        self._move = self.redis.register_script(_MOVE)
        self._progress = self.redis.register_script(_PROGRESS)
        self._untrack = self.redis.register_script(_UNTRACK)

    # -- the moves -------------------------------------------------------------------------

    def enqueue(self, record: JobRecord) -> None:
        """Write a new job's record and put it on its queue; `QueueFull` past the cap."""
        self.queues.check_room(record.model)
        if self._step("enqueue", record, JobStatus.QUEUED, create=True, push=False) is None:
            raise ValueError(f"job {record.id} exists already")
        if self.queues.ack_replicas:
            # Acknowledged once a replica holds it: a failover then loses no accepted job.
            self.queues.await_replicas()

    def start(
        self, record: JobRecord, worker: str, *, take_from_queue: bool = False
    ) -> JobRecord | None:
        """The queued job `record`, running under `worker`'s lease; None when it is not
        queued (canceled, or someone else started it). `take_from_queue`: it is still on its
        queue (a batch companion) and leaves it."""
        move = self._step(
            "start",
            record,
            JobStatus.RUNNING,
            allowed=(JobStatus.QUEUED,),
            fields={"worker": worker, "started_at": utcnow()},
            pull=take_from_queue,
            event="start",
        )
        return move.after if move is not None else None

    def progress(
        self,
        worker: str,
        steps: dict[str, tuple[JobRecord, Progress, bool]],
        held: Iterable[JobRecord] = (),
    ) -> set[str]:
        """Write the progress of the jobs in `steps` ((job, progress, with a progress
        webhook) by id) and renew their leases and those of the other jobs `held`, in one
        step. Returns the ids of the jobs that are no longer `worker`'s to run."""
        jobs = {**{r.id: r for r in held}, **{i: step[0] for i, step in steps.items()}}
        if not jobs:
            return set()
        redis_keys = [keys.WEBHOOKS_DUE]
        lease_ms = str(int(self.store.lease_s * 1000))
        args = [dump(worker), lease_ms, f"{time.time():.3f}", str(webhooks.DELIVERY_TTL_S)]
        for job_id, record in jobs.items():
            redis_keys += [keys.job(job_id), keys.lease(job_id), keys.events(job_id)]
            if job_id not in steps:
                args += ["", "", "", ""]
                continue
            _, progress, notify = steps[job_id]
            view = {**progress.model_dump(), "fraction": progress.fraction}
            message = json.dumps({"event": "progress", **view}, separators=(",", ":"))
            delivery = None
            if notify and self.notices is not None:
                delivery = self.notices.progress(record, view)
            args += [dump(progress), message]
            args += [keys.webhook(delivery.id), delivery.dump()] if delivery else ["", ""]
        mine = cast(list[int], self._progress(keys=redis_keys, args=args))
        return {job_id for job_id, held_now in zip(jobs, mine, strict=True) if not held_now}

    def succeed(
        self, record: JobRecord, worker: str, images: list[StoredImage], timings: dict[str, float]
    ) -> bool:
        """False when the job is no longer `worker`'s (canceled, or taken over)."""
        return self._end("succeed", record, worker, images=images, timings=timings)

    def fail(self, record: JobRecord, worker: str, code: FailureCode, message: str) -> bool:
        """False when the job is no longer `worker`'s (canceled, or taken over)."""
        return self._end("fail", record, worker, error=JobError(code=code.value, message=message))

    def expire(self, record: JobRecord, worker: str) -> bool:
        """The job ran past its time limit: it fails with `timeout`."""
        error = JobError(code=FailureCode.TIMEOUT.value, message="the job ran past its time limit")
        return self._end("expire", record, worker, error=error)

    def cancel(self, record: JobRecord) -> JobStatus | None:
        """Cancel a queued job (it leaves its queue) or a running one (its worker stops at
        its next step); the status it had, or None when it had already ended."""
        move = self._step(
            "cancel",
            record,
            JobStatus.CANCELED,
            allowed=(JobStatus.QUEUED, JobStatus.RUNNING),
            pull=True,
            event="completed",
        )
        return move.previous if move is not None else None

    def give_back(self, record: JobRecord, worker: str) -> bool:
        """Put a job `worker` holds back at the front of its queue, for another worker."""
        move = self._step(
            "give_back",
            record,
            JobStatus.QUEUED,
            allowed=(JobStatus.RUNNING,),
            holder=worker,
            fields=_fresh_start(record),
            push=True,
        )
        return move is not None

    def recover(self, record: JobRecord, poison_limit: int) -> str | None:
        """A running job whose lease ran out: back at the front of its queue, or failed
        `worker_lost` once it has lost `poison_limit` workers. None when the lease came back
        or the job moved meanwhile (its worker was only slow, or another reaper won)."""
        attempts = record.attempts + 1
        fields: dict[str, Any] = {**_fresh_start(record), "attempts": attempts}
        to, event = JobStatus.QUEUED, None
        push: bool | None = True
        if attempts >= poison_limit:
            message = f"the worker running this job was lost {attempts} times; the job is not "
            error = JobError(code=FailureCode.WORKER_LOST.value, message=message + "tried again")
            fields = {"attempts": attempts, "error": error}
            to, push, event = JobStatus.FAILED, None, "completed"
        move = self._step(
            "recover",
            record,
            to,
            allowed=(JobStatus.RUNNING,),
            # What this reaper read must still hold: two reapers never both count one loss.
            expect={"attempts": dump(record.attempts), "worker": dump(record.worker)},
            lease_lost=True,
            fields=fields,
            push=push,
            event=event,
        )
        if move is None:
            return None
        return LOST if to is JobStatus.FAILED else REQUEUED

    def recover_adrift(self, record: JobRecord) -> bool:
        """A queued job on no queue (its worker died between taking it off the queue and
        starting it): back at the front of its queue. False when it is on its queue again,
        or was started, canceled or put back meanwhile."""
        move = self._step(
            "recover",
            record,
            JobStatus.QUEUED,
            allowed=(JobStatus.QUEUED,),
            expect={"rq_id": dump(record.rq_id)},
            off_queue=True,
            push=True,
        )
        return move is not None

    def untrack(self, job_id: str) -> None:
        """Drop a job from the running set and the queued index unless it is running or
        queued (a record that expired there)."""
        self._untrack(keys=[keys.job(job_id), keys.RUNNING, keys.QUEUED], args=[job_id])

    # -- one step --------------------------------------------------------------------------

    def _end(self, name: str, record: JobRecord, worker: str, **fields: Any) -> bool:
        status = JobStatus.SUCCEEDED if name == "succeed" else JobStatus.FAILED
        move = self._step(
            name,
            record,
            status,
            allowed=(JobStatus.RUNNING,),
            holder=worker,
            fields=fields,
            event="completed",
        )
        return move is not None

    def _step(
        self,
        name: str,
        record: JobRecord,
        to: JobStatus,
        *,
        allowed: tuple[JobStatus, ...] = (),
        create: bool = False,
        fields: dict[str, Any] | None = None,
        holder: str | None = None,
        expect: dict[str, str] | None = None,
        lease_lost: bool = False,
        off_queue: bool = False,
        push: bool | None = None,
        pull: bool = False,
        event: str | None = None,
    ) -> Move | None:
        """Make one move in one script call (see `_MOVE`): what it did, or None when the job
        may not make it. `push` puts a fresh RQ job on the job's queue (True: at the front);
        `pull` takes a queued job's RQ job off it."""
        update: dict[str, Any] = {"status": to, **(fields or {})}
        if to.is_terminal():
            update.setdefault("finished_at", utcnow())
        move: dict[str, Any] = {
            "job": record.id,
            "to": dump(to.value),
            "from": [dump(s.value) for s in allowed],
            "expect": {**(expect or {}), **({"worker": dump(holder)} if holder else {})},
            "set": [v for f, value in update.items() if f != "status" for v in (f, dump(value))],
            "message": events.status_message(to.value),
            "now": f"{time.time():.3f}",
            "rq_prefix": Job.redis_job_namespace_prefix,
        }
        if create:
            move.update(create=True, set=_flat(encode(record)), ttl=str(self.store.ttl_s))
        if to is JobStatus.RUNNING:
            move["lease"] = [dump(update["worker"]), str(int(self.store.lease_s * 1000))]
        rq_job: list[str | bytes] = []
        if push is not None:
            # The first run's RQ job has the job's id; each re-run gets a fresh one, so that
            # the bookkeeping of the run it replaces (RQ deletes a finished job) cannot touch it.
            rq_id = record.id if create else f"{record.id}-r{secrets.token_hex(4)}"
            if not create:
                update["rq_id"] = rq_id
                move["set"] += ["rq_id", dump(rq_id)]
            move["push"] = {"id": rq_id, "front": push}
            rq_job = self.queues.rq_job(
                record.id, record.model, record.priority, rq_id, record.timeout_s
            )
        if pull:
            move["pull"] = str(self.store.ttl_s)
        move.update(
            {f: True for f, on in (("lease_lost", lease_lost), ("off_queue", off_queue)) if on}
        )
        after = record.model_copy(update=update)
        delivery = self._delivery(after, update, event)
        if delivery is not None:
            move["webhook"] = {
                "id": delivery.id,
                "key": keys.webhook(delivery.id),
                "body": delivery.dump(),
                "ttl": str(webhooks.DELIVERY_TTL_S),
            }
        previous = self._move(
            keys=[
                keys.job(record.id),
                keys.events(record.id),
                keys.RUNNING,
                keys.lease(record.id),
                keys.QUEUED,
                self.queues.queue(record.model, record.priority).key,
                Queue.redis_queues_keys,
                keys.WEBHOOKS_DUE,
            ],
            args=[json.dumps(move, separators=(",", ":")), *rq_job],
        )
        if previous is None:
            return None
        was = None if create else JobStatus(json.loads(previous))
        done = Move(name, record, after, was)
        _log(done)
        if self.observe is not None:
            self.observe(done)
        return done

    def _delivery(
        self, after: JobRecord, update: dict[str, Any], event: str | None
    ) -> webhooks.Delivery | None:
        if event is None or self.notices is None or after.wants_webhook(event) is None:
            return None
        if event == "completed":
            # The whole job as it ends: read afresh for the progress its worker last wrote.
            current = self.store.get(after.id)
            if current is not None:
                after = current.model_copy(update=update)
        return self.notices.about(after, event)


def _fresh_start(record: JobRecord) -> dict[str, Any]:
    """The fields of a job put back on its queue: as if it had never started."""
    return {
        "started_at": None,
        "worker": None,
        "progress": Progress(step=0, total_steps=record.progress.total_steps),
    }


def _flat(fields: dict[str, str]) -> list[str]:
    return [v for item in fields.items() for v in item]


def _log(move: Move) -> None:
    """The one line a move writes."""
    after, before = move.after, move.before
    logs.transition(
        after.id,
        after.model,
        after.type.value,
        after.status.value,
        level=logging.WARNING if move.name == "recover" else logging.INFO,
        move=move.name,
        previous=move.previous.value if move.previous is not None else None,
        worker=after.worker or before.worker,
        attempts=after.attempts or None,
        timings=(after.timings or None) if after.status is JobStatus.SUCCEEDED else None,
        error=after.error.model_dump() if after.error is not None else None,
        # The job's own request, also when another's run or a reaper moves it.
        request_id=after.request_id,
    )
