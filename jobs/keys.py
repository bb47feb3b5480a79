"""Redis key and RQ queue names, in one place so API and worker cannot drift apart."""

from jobs.protocol import Priority

PREFIX = "latentq"

REPLICATION_PROBE = f"{PREFIX}:replication-probe"
"""A counter written just before `WAIT`, so that the wait covers every earlier write of any
connection (`queueing.JobQueues.await_replicas`)."""

RUN_JOB = "worker.tasks.run_job"
"""The job function, enqueued by dotted path so the API never imports the worker."""


def job(job_id: str) -> str:
    """Hash holding a job's record."""
    return f"{PREFIX}:job:{job_id}"


def queue(model_id: str, priority: Priority | str) -> str:
    """The RQ queue name of one model at one priority (RQ keeps it at `rq:queue:<name>`)."""
    return f"{PREFIX}.{model_id}.{Priority(priority).value}"


def lease(job_id: str) -> str:
    """Held by the worker running the job, renewed at each step; gone when the worker is."""
    return f"{PREFIX}:lease:{job_id}"


RUNNING = f"{PREFIX}:running"
"""Set of the ids of running jobs, which the reapers check for lost leases."""

QUEUED = f"{PREFIX}:queued"
"""Sorted set of the ids of queued jobs, by when each was last known to be on its queue; the
reapers look there for jobs that are on none."""


def worker(name: str) -> str:
    """A worker's presence (JSON with its models), expiring unless it heartbeats."""
    return f"{PREFIX}:worker:{name}"


WORKERS = f"{PREFIX}:workers"
"""Set of worker names that announced themselves; entries whose presence expired are stale."""


def events(job_id: str) -> str:
    """Pub/sub channel of a job's events (`jobs.events`), published on at every change."""
    return f"{PREFIX}:events:{job_id}"


WEBHOOKS_DUE = f"{PREFIX}:webhooks:due"
"""Sorted set of webhook delivery ids by the time each is due (or its send lease ends)."""


def webhook(delivery_id: str) -> str:
    """One webhook delivery (JSON: url, event, body, attempts), expiring after a day."""
    return f"{PREFIX}:webhook:{delivery_id}"


def idempotency(caller: str, key_hash: str) -> str:
    """A caller's claim on an Idempotency-Key (JSON: job id, request fingerprint, state),
    named by the key's SHA-256 so that any key fits."""
    return f"{PREFIX}:idem:{caller}:{key_hash}"


def rate(caller: str) -> str:
    """Hash holding a caller's submit token bucket (tokens, when last counted)."""
    return f"{PREFIX}:rate:{caller}"


def share(model_id: str, owner: str) -> str:
    """Sorted set of an API key's waiting jobs for one model (job id → when added), counted
    against its share of the model's queue."""
    return f"{PREFIX}:share:{model_id}:{owner}"


def holds(caller: str) -> str:
    """Sorted set of a caller's open requests (hold id → when it expires)."""
    return f"{PREFIX}:holds:{caller}"
