"""Redis key and RQ queue names, in one place so API and worker cannot drift apart."""

from jobs.protocol import Priority

PREFIX = "latentq"

REPLICATION_PROBE = f"{PREFIX}:replication-probe"
"""A counter written just before `WAIT`, so that the wait covers every earlier write of any
connection (queueing.JobQueues.submit)."""

RUN_JOB = "worker.tasks.run_job"
"""The job function, enqueued by dotted path so the API never imports the worker."""


def job(job_id: str) -> str:
    """Hash holding a job's record."""
    return f"{PREFIX}:job:{job_id}"


def queue(model_id: str, priority: Priority | str) -> str:
    """The RQ queue name of one model at one priority (RQ keeps it at `rq:queue:<name>`)."""
    return f"{PREFIX}.{model_id}.{Priority(priority).value}"


def queues(model_id: str) -> list[str]:
    """A model's queue names, most urgent first: the order a worker listens in."""
    return [queue(model_id, p) for p in Priority]


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
