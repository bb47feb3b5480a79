"""The function RQ runs, enqueued by the API as `worker.tasks.run_job`.

RQ calls a plain function; the warm models live in the worker process, set once at start-up
(`SimpleWorker` runs jobs in that same process, which is what keeps them warm).
"""

from __future__ import annotations

from worker.context import WorkerContext
from worker.runner import execute

_context: WorkerContext | None = None


def set_context(context: WorkerContext | None) -> None:
    global _context
    _context = context


def run_job(job_id: str) -> str:
    if _context is None:
        raise RuntimeError("run_job needs a worker started with `python -m worker`")
    return execute(_context, job_id)
