"""Prometheus metrics of the API process."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.lifecycle import Move

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "latentq_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "latentq_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
JOBS_SUBMITTED = Counter(
    "latentq_jobs_submitted_total",
    "Jobs accepted, by type and model.",
    ["type", "model"],
    registry=REGISTRY,
)
JOB_MOVES = Counter(
    "latentq_api_job_moves_total",
    "Job moves this API process made (enqueue, cancel, and a reaper's recover), by move, "
    "model and the status they led to.",
    ["move", "model", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "latentq_queue_depth",
    "Jobs waiting, by model and priority (read from Redis at scrape time).",
    ["model", "priority"],
    registry=REGISTRY,
)
WORKERS = Gauge(
    "latentq_workers",
    "Live workers holding a model warm (read from Redis at scrape time).",
    ["model"],
    registry=REGISTRY,
)


def observe_move(move: Move) -> None:
    JOB_MOVES.labels(move.name, move.after.model, move.after.status.value).inc()


class MetricsMiddleware:
    """Counts and times every request under its route template (not its raw path, which
    would make a series per job id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template, method).observe(time.perf_counter() - start)
