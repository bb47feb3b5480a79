"""The FastAPI application: `uvicorn --factory app.main:create_app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import errors
from app.auth import KeyRing, OpenModeGuard, trusts_every_forwarder
from app.deps import State
from app.events import EventHub
from app.fairness import OpenHolds, QueueShares
from app.limits import BodyLimitMiddleware
from app.metrics import MetricsMiddleware
from app.ratelimit import RateLimiter
from app.requestid import RequestIdMiddleware
from app.retention import sweep_forever
from app.routes import files, health, jobs, models, openai
from app.routes.jobs import PARAMS_SCHEMA
from app.service import JobService
from app.settings import AppSettings, get_app_settings
from app.webhooks import Dispatcher, dispatch_forever
from jobs import logs
from jobs.catalog import load_catalog
from jobs.connection import ack_replicas, connect, connect_async
from jobs.queueing import JobQueues
from jobs.records import JobStore
from jobs.recovery import Reaper
from jobs.storage import make_storage
from jobs.webhooks import Outbox

log = logging.getLogger("latentq.api")

STATIC_DIR = Path(__file__).parent / "static"


def build_state(settings: AppSettings) -> State:
    catalog = load_catalog(settings.catalog)
    connection = connect(
        settings, socket_connect_timeout=2, socket_timeout=10, health_check_interval=15
    )
    store = JobStore(connection, settings.job_ttl_s, settings.lease_s)
    queues = JobQueues(
        connection,
        store,
        queue_max=settings.queue_max,
        job_timeout_s=settings.job_timeout_s,
        ack_replicas=ack_replicas(settings),
        ack_timeout_ms=settings.redis_ack_timeout_ms,
    )
    storage = make_storage(settings)
    keys = KeyRing(settings.api_keys, settings.default_key_scopes)
    # Fairness is between keys: in open mode there is one caller.
    shares: QueueShares | None = None
    holds: OpenHolds | None = None
    if keys.enabled:
        shares = QueueShares(
            connection, settings.queue_max, settings.key_queue_share, settings.job_ttl_s
        )
        holds = OpenHolds(
            connect_async(settings, socket_connect_timeout=2),
            settings.streams_per_key,
        )
    return State(
        settings=settings,
        redis=connection,
        storage=storage,
        jobs=JobService(settings, catalog, store, queues, storage, shares),
        hub=EventHub(connect_async(settings, socket_connect_timeout=2)),
        keys=keys,
        limiter=RateLimiter(connection, settings.rate_limit_per_min, settings.rate_limit_burst),
        holds=holds,
    )


async def reap_forever(state: State, every_s: float) -> None:
    """Look for jobs whose worker was lost (see `jobs.recovery`)."""
    settings = state.settings
    reaper = Reaper(state.jobs.lifecycle, settings.poison_limit, settings.adrift_after_s)
    while True:
        try:
            await run_in_threadpool(reaper.reap_once)
        except Exception as exc:  # Redis away: the next round tries again
            log.warning("reaper: %s", exc)
        await asyncio.sleep(every_s)


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or get_app_settings()
    logs.configure(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        app.state.latentq = state
        if not state.keys.enabled:
            log.warning(
                "no API keys configured: the service is open%s",
                " to every address (LATENTQ_ALLOW_OPEN)"
                if settings.allow_open
                else ", answering /v1 on loopback only",
            )
        ids = ", ".join(m.id for m in state.jobs.catalog.models)
        where = (
            f"bucket {settings.s3_bucket}"
            if settings.storage == "s3"
            else f"files in {settings.data_dir.resolve()}"
        )
        redis_at = (
            f"primary {settings.redis_sentinel_master!r} of sentinels {settings.redis_sentinels}"
            if settings.redis_sentinels
            else logs.mask_url(settings.redis_url)
        )
        log.info("serving models %s; redis %s; %s", ids, redis_at, where)
        await state.hub.start()
        # A claimed delivery is hidden from other replicas for longer than it may take.
        outbox = Outbox(state.redis, lease_s=max(60, 2 * settings.webhook_timeout_s))
        dispatcher = Dispatcher(outbox, settings)
        tasks = [
            asyncio.create_task(
                sweep_forever(state.storage, settings.job_ttl_s, settings.retention_sweep_s),
                name="retention",
            ),
            asyncio.create_task(dispatch_forever(dispatcher), name="webhooks"),
            asyncio.create_task(reap_forever(state, settings.reap_interval_s), name="reaper"),
        ]
        if state.holds is not None:
            tasks.append(asyncio.create_task(state.holds.renew_forever(), name="holds"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await dispatcher.close()
            await state.hub.stop()
            if state.holds is not None:
                await state.holds.redis.aclose()
            state.redis.close()

    app = FastAPI(
        title="latentq",
        version="0.1.0",
        summary="Text-to-image, inpainting and outpainting jobs on warm diffusion workers.",
        lifespan=lifespan,
    )
    errors.install(app)
    for router in (jobs.router, models.router, files.router, openai.router, health.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.get("/", include_in_schema=False)(lambda: FileResponse(STATIC_DIR / "index.html"))
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    open_mode = not KeyRing(settings.api_keys).enabled and not settings.allow_open
    if open_mode and trusts_every_forwarder(settings.forwarded_allow_ips):
        raise ValueError(
            "no API keys are configured, so the service answers loopback clients only, but "
            f"FORWARDED_ALLOW_IPS={settings.forwarded_allow_ips!r} lets any client claim to be "
            "one (X-Forwarded-For: 127.0.0.1): set it to your proxy's address, or set "
            "LATENTQ_API_KEYS"
        )
    app.add_middleware(OpenModeGuard, enabled=open_mode, hosts=settings.open_hosts.split(","))
    app.add_middleware(MetricsMiddleware)
    # Outermost: the request id is set before anything else logs.
    app.add_middleware(RequestIdMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, summary=app.summary
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(PARAMS_SCHEMA.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
