"""Prometheus metrics of a worker process, and its small HTTP server.

Each worker serves its own `/metrics` (and `/readyz`, `/healthz`) on `LATENTQ_METRICS_PORT`,
so several workers on one host are several scrape targets, each with correct numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from jobs.lifecycle import Move

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

JOB_DURATION = Histogram(
    "latentq_worker_job_duration_seconds",
    "Time a job ran on the worker, by type and model.",
    ["type", "model"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "latentq_worker_step_seconds",
    "Seconds per denoising step (whole batch), by type and model.",
    ["type", "model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
    registry=REGISTRY,
)
QUEUED_SECONDS = Histogram(
    "latentq_job_queued_seconds",
    "Time from submit to start, by model.",
    ["model"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
MODEL_LOAD = Gauge(
    "latentq_worker_model_load_seconds",
    "Seconds the model took to load and warm up.",
    ["model"],
    registry=REGISTRY,
)
JOBS = Counter(
    "latentq_worker_jobs_total",
    "Jobs ended on this worker, by type, model, status and failure code ('' unless failed).",
    ["type", "model", "status", "code"],
    registry=REGISTRY,
)
WARM = Gauge(
    "latentq_worker_warm_models",
    "1 for each model this worker holds warm.",
    ["model"],
    registry=REGISTRY,
)
GPU_MEMORY = Gauge(
    "latentq_worker_gpu_memory_bytes",
    "CUDA memory of this worker's device (on CUDA only).",
    ["device", "kind"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "latentq_worker_batch_size",
    "Images per pipeline call.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
    registry=REGISTRY,
)
JOB_MOVES = Counter(
    "latentq_worker_job_moves_total",
    "Job moves this worker made (start, succeed, fail, expire, give_back, and a reaper's "
    "recover), by move, model and the status they led to.",
    ["move", "model", "status"],
    registry=REGISTRY,
)
BATCH_JOBS = Histogram(
    "latentq_worker_batch_jobs",
    "Jobs per batched pipeline call (micro-batching of compatible txt2img jobs).",
    buckets=(2, 3, 4, 6, 8, 12, 16, 32),
    registry=REGISTRY,
)


def observe_move(move: Move) -> None:
    """The metrics of a job move this process made (`jobs.lifecycle`)."""
    job = move.after
    JOB_MOVES.labels(move.name, job.model, job.status.value).inc()
    if move.name == "start":
        QUEUED_SECONDS.labels(job.model).observe(age_s(job.created_at))


def age_s(timestamp: str | None) -> float:
    """Seconds since an RFC 3339 time of a record (0 for none)."""
    if timestamp is None:
        return 0.0
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


class _State:
    ready = False
    refresh: Callable[[], None] | None = None


def mark_ready(refresh: Callable[[], None] | None = None) -> None:
    """Models are warm: `/readyz` answers 200 from now on; `refresh` runs before each scrape."""
    _State.refresh = refresh
    _State.ready = True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.split("?")[0] == "/metrics":
            if _State.refresh is not None:
                try:
                    _State.refresh()
                except Exception:  # a failed refresh keeps the last values
                    log.exception("metrics refresh failed")
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif self.path == "/readyz":
            ready = _State.ready
            self._answer(200 if ready else 503, b"ready\n" if ready else b"loading\n")
        elif self.path == "/healthz":
            self._answer(200, b"ok\n")
        else:
            self._answer(404, b"not found\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve metrics and readiness on a daemon thread (before the models load, so a probe
    sees 503 while they do)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics and readiness on %s:%d (/metrics, /readyz)", host, server.server_address[1])
    return server
