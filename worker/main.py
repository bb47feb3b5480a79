"""`python -m worker`: load the models, then take jobs from their queues until stopped.

Models are loaded before the first job is taken, and jobs run in this process: RQ's forking
worker would run each job in a child forked after torch started, which hangs (OpenMP after
fork) or re-initialises CUDA; a per-job spawn would reload the weights every time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from jobs import defaults, keys, logs
from jobs.batching import Batcher
from jobs.catalog import Catalog, CatalogError, ModelEntry, load_catalog
from jobs.connection import connect
from jobs.lifecycle import Lifecycle
from jobs.protocol import Priority
from jobs.queueing import JobQueues, announce_worker, retire_worker
from jobs.records import JobStore
from jobs.recovery import Reaper
from jobs.storage import make_storage
from jobs.webhooks import Notices
from worker import metrics
from worker.context import WorkerContext
from worker.settings import WorkerSettings, get_worker_settings
from worker.tasks import set_context

log = logging.getLogger("latentq.worker")


def model_source(catalog: Catalog, entry: ModelEntry) -> str:
    """The folder (or hub id) to load; builds a missing demo model first."""
    path = catalog.local_path(entry)
    if path is None:
        return entry.source
    if entry.demo and not (path / "model_index.json").exists():
        build_demo_model(entry, path)
    if not path.exists():
        raise CatalogError(f"model {entry.id}: {path} does not exist")
    return str(path)


def build_demo_model(entry: ModelEntry, path: Path) -> None:
    """Build the demo model beside `path`, then move it into place in one rename.

    Workers that start together on one models volume (compose, Kubernetes) may all find it
    missing: each builds its own copy, the first rename wins, and none ever loads a folder that
    another is still writing.
    """
    from worker.demo_model import build

    log.info("building demo %s model %s at %s", entry.family, entry.id, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}")
    build(entry.family, staging)
    try:
        staging.rename(path)
    except OSError:
        # Another worker's copy is in place (or a folder is there already): use that one.
        shutil.rmtree(staging, ignore_errors=True)
        if not (path / "model_index.json").exists():
            raise


def forget_dead_namesake(worker: SimpleWorker) -> None:
    """Drop RQ's registration of an earlier worker of this host and pid.

    RQ refuses to start a worker whose name is still registered, for up to its TTL (about 8
    minutes) after a holder that was killed. A container restarted by its restart policy
    (compose, Kubernetes) keeps its hostname and runs the worker as pid 1 again: the default
    name host.pid comes back. A live process with this host and pid would be this one, so the
    registration is a dead one's; its jobs are recovered by their leases.
    """
    if worker.connection.exists(worker.key) and not worker.connection.hexists(worker.key, "death"):
        log.warning("worker %s: an earlier worker of this name died; forgetting it", worker.name)
        worker.register_death()


def adapter_files(catalog: Catalog, entry: ModelEntry, source: str) -> list[tuple[str, Path]]:
    """The LoRA adapters `entry`'s jobs may apply, as (id, file); builds missing demo ones
    (tiny random LoRAs for the demo model at `source`)."""
    files = []
    for adapter in catalog.adapters_for(entry):
        path = catalog.adapter_path(adapter)
        if adapter.demo and not path.exists():
            from worker.adapters import build_tiny_lora

            log.info("building demo adapter %s at %s", adapter.id, path)
            build_tiny_lora(source, path, seed=sum(map(ord, adapter.id)))
        files.append((adapter.id, path))
    return files


def _housekeeping(
    connection: redis.Redis,
    name: str,
    info: dict[str, object],
    reaper: Reaper,
    interval_s: float,
    stop: threading.Event,
) -> None:
    """Announce this worker, and look for jobs other workers lost, until told to stop."""
    next_reap = 0.0
    while not stop.is_set():
        try:
            announce_worker(connection, name, info, defaults.WORKER_PRESENCE_TTL_S)
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + interval_s
                reaper.reap_once()
        except redis.exceptions.RedisError as exc:
            log.warning("housekeeping: %s", exc)
        stop.wait(min(defaults.WORKER_HEARTBEAT_S, interval_s))


EXIT_DEVICE_BROKEN = 70
"""Exit status of a worker whose device failed beyond repair (EX_SOFTWARE)."""


class DrainingWorker(SimpleWorker):  # type: ignore[misc]
    """RQ's in-process worker, with a grace period on SIGTERM/SIGINT: the running job may
    finish within `grace_s`; past it, the job goes back to the front of its queue and the
    worker exits. No new job is taken either way.

    It also outlives Redis going away under a job (a restart, a Sentinel failover): RQ quits
    on any error that reaches its loop, and a job whose end cannot be written raises one. The
    job is left to its lease, which runs out; the reaper then puts it back on its queue, and
    this worker waits for Redis in RQ's own dequeue loop.
    """

    context: WorkerContext | None = None
    grace_s: float = 0.0

    def execute_job(self, job: Any, queue: Any) -> None:
        try:
            super().execute_job(job, queue)
        except redis.exceptions.ConnectionError as exc:
            log.warning(
                "Redis went away while job %s ran; its lease brings it back: %s", job.id, exc
            )
        if self.context is not None and self.context.broken is not None:
            # Exit non-zero so that the supervisor starts a fresh process: a CUDA context
            # that failed this way stays failed. The job was given back to its queue.
            log.critical(
                "exiting (%d) to be restarted: %s", EXIT_DEVICE_BROKEN, self.context.broken
            )
            logging.shutdown()
            os._exit(EXIT_DEVICE_BROKEN)

    # The other steps of RQ's loop that talk to Redis: each is tried again on the next turn,
    # after the dequeue has waited for Redis to come back.
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline)
        except redis.exceptions.ConnectionError as exc:
            log.warning("worker heartbeat not written: %s", exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except redis.exceptions.ConnectionError as exc:
            log.warning("suspension not checked: %s", exc)

    def set_state(self, state: Any, pipeline: Any = None) -> None:
        try:
            super().set_state(state, pipeline)
        except redis.exceptions.ConnectionError as exc:
            log.warning("worker state %s not written: %s", state, exc)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except redis.exceptions.ConnectionError as exc:
            log.warning("maintenance not run: %s", exc)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.context is not None and self.context.drain_deadline is None:
            self.context.drain_deadline = time.monotonic() + self.grace_s
            log.info("stopping: the running job has %.0fs to finish", self.grace_s)
        super().request_stop(signum, frame)


def _gpu_memory_reporter(device: object) -> Callable[[], None] | None:
    import torch

    if not isinstance(device, torch.device) or device.type != "cuda":
        return None
    name = str(device)

    def refresh() -> None:
        metrics.GPU_MEMORY.labels(name, "allocated").set(torch.cuda.memory_allocated(device))
        metrics.GPU_MEMORY.labels(name, "reserved").set(torch.cuda.memory_reserved(device))

    return refresh


def run(settings: WorkerSettings, burst: bool = False) -> int:
    try:
        catalog = load_catalog(settings.catalog)
    except CatalogError as exc:
        log.error("%s", exc)
        return 2
    ids = settings.model_ids() or [m.id for m in catalog.models]
    unknown = [i for i in ids if i not in catalog.by_id]
    if unknown:
        log.error("models %s are not in the catalogue %s", unknown, settings.catalog)
        return 2

    # Library chatter (progress bars, optional-backend notices) would bury the worker's log.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import diffusers
    import torch

    from worker.pipelines import WarmModel, WarmVideoModel, load_model

    diffusers.utils.logging.disable_progress_bar()

    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.error(
                "cannot serve metrics on port %d: %s (set LATENTQ_METRICS_PORT to a free "
                "port per worker, or 0 for none)",
                settings.metrics_port,
                exc,
            )
            return 2
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    models: dict[str, WarmModel | WarmVideoModel] = {}
    for model_id in ids:
        entry = catalog.by_id[model_id]
        source = model_source(catalog, entry)
        model = load_model(
            entry,
            source,
            settings.device,
            attention=settings.attention,
            compile=settings.compile,
            vae_tiling_pixels=settings.vae_tiling_pixels,
            adapters=adapter_files(catalog, entry, source),
        )
        models[model_id] = model
        log.info("model %s warm: %s", model_id, json.dumps(model.config))
        metrics.MODEL_LOAD.labels(model_id).set(model.load_s)
        metrics.WARM.labels(model_id).set(1)

    name = settings.worker_name or f"{socket.gethostname()}.{os.getpid()}"
    connection = connect(settings)
    storage = make_storage(settings)
    notices = Notices(storage, base_url=settings.public_url or "", url_ttl_s=settings.url_ttl_s)

    def lifecycle_on(client: redis.Redis) -> Lifecycle:
        store = JobStore(client, settings.job_ttl_s, settings.lease_s)
        queues = JobQueues(
            client, store, queue_max=settings.queue_max, job_timeout_s=settings.job_timeout_s
        )
        return Lifecycle(queues, notices=notices, observe=metrics.observe_move)

    first = next(iter(models.values()))
    info: dict[str, object] = {
        "models": ids,
        "device": str(first.device.torch_device),
        "dtype": str(first.device.dtype).removeprefix("torch."),
        "attention": first.attention,
        "pid": os.getpid(),
        # How each model runs here (dtype, attention, compile, ...), for GET /v1/models.
        "runtime": {model_id: model.config for model_id, model in models.items()},
    }
    context = WorkerContext(
        name=name,
        lifecycle=lifecycle_on(connection),
        storage=storage,
        models=models,
        info=info,
        catalog=catalog,
        # A test hook, never set outside the chaos tests: see `worker.context.crash_point`.
        crash_at=os.environ.get("LATENTQ_TEST_CRASH_AT") or None,
    )
    if settings.batch_max > 1:
        context.batcher = Batcher(context.lifecycle, name)
        context.batch_max = settings.batch_max
        context.batch_wait_s = settings.batch_wait_ms / 1000
        side = 512 if first.device.is_cuda else 256
        context.batch_max_pixels = (
            settings.batch_max_pixels if settings.batch_max_pixels is not None else 4 * side * side
        )
    set_context(context)

    # Every model's high-priority queue before any normal one, and so on.
    queues = [
        Queue(keys.queue(model_id, priority), connection=connection, serializer=JSONSerializer)
        for priority in Priority
        for model_id in ids
    ]
    metrics.mark_ready(_gpu_memory_reporter(first.device.torch_device))
    stop = threading.Event()
    # The presence thread gets a client of its own: RQ retunes the socket timeouts of the
    # worker's connection pool for its blocking pops.
    presence = connect(settings, socket_timeout=5)
    reaper = Reaper(lifecycle_on(presence), settings.poison_limit, settings.adrift_after_s)
    beat = threading.Thread(
        target=_housekeeping,
        args=(presence, name, info, reaper, settings.reap_interval_s, stop),
        name="housekeeping",
        daemon=True,
    )
    beat.start()
    worker = DrainingWorker(queues, connection=connection, name=name, serializer=JSONSerializer)
    if not settings.worker_name:
        forget_dead_namesake(worker)
    worker.context = context
    worker.grace_s = settings.drain_grace_s
    log.info("worker %s ready on %s", name, ", ".join(q.name for q in queues))
    try:
        worker.work(
            burst=burst,
            logging_level=logging.getLevelName(log.getEffectiveLevel()),
            # A fresh process now and then bounds what leaks (fragmented CUDA memory).
            max_jobs=settings.recycle_after_jobs or None,
        )
    finally:
        stop.set()
        try:
            retire_worker(presence, name)
        except redis.exceptions.RedisError:
            pass
        set_context(None)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--models", help="comma-separated model ids (default: all)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--catalog", type=Path, help="the model catalogue file")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    args = parser.parse_args(argv)
    settings = get_worker_settings()
    logs.configure(settings.log_format, settings.log_level)
    overrides = {
        k: v
        for k, v in (("models", args.models), ("device", args.device), ("catalog", args.catalog))
        if v is not None
    }
    if overrides:
        settings = settings.model_copy(update=overrides)
    sys.exit(run(settings, burst=args.burst))
