"""Liveness, readiness and metrics."""

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.deps import StateDep
from app.errors import envelope
from jobs.queueing import live_workers

log = logging.getLogger(__name__)
router = APIRouter(tags=["service"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep) -> JSONResponse:
    """200 when Redis answers, else 503."""
    try:
        state.redis.ping()
    except Exception as exc:  # any failure to reach Redis means not ready
        return envelope(503, "service_unavailable", f"Redis does not answer: {exc}")
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics_endpoint(state: StateDep) -> Response:
    """Prometheus text format."""

    def refresh() -> None:
        queues = state.jobs.queues
        workers = live_workers(state.redis)
        for model in state.jobs.catalog.models:
            for priority, depth in queues.depth(model.id).items():
                metrics.QUEUE_DEPTH.labels(model.id, priority.value).set(depth)
            metrics.WORKERS.labels(model.id).set(len(workers.get(model.id, [])))

    try:
        await run_in_threadpool(refresh)
    except Exception as exc:  # still answer, with the last known values, when Redis is down
        log.warning("metrics: could not read queue depths: %s", exc)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
