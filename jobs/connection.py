"""Connections to Redis: one server at `redis_url`, or the primary that Redis Sentinel names.

With `LATENTQ_REDIS_SENTINELS` set, every client asks the Sentinels for the current primary of
`LATENTQ_REDIS_SENTINEL_MASTER` when it connects, and again when a connection fails or finds
itself on a server that is no longer the primary: after a failover, the API and the workers
follow the new primary by themselves. `redis_url` then still gives the database number, the
user name and the password of the data servers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from jobs.settings import Settings

SENTINEL_TIMEOUT_S = 1.0
"""How long to wait for one Sentinel's answer before asking the next."""


def sentinel_addresses(spec: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (port 26379 when left out) as (host, port) pairs."""
    addresses = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host or not port.isdigit():
            raise ValueError(f"LATENTQ_REDIS_SENTINELS: {item!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _data_options(url: str) -> dict[str, Any]:
    """Database, user and password of the data servers, from `redis_url`."""
    parsed = urlparse(url)
    path = parsed.path.lstrip("/")
    options: dict[str, Any] = {"db": int(path) if path.isdigit() else 0}
    if parsed.username:
        options["username"] = unquote(parsed.username)
    if parsed.password:
        options["password"] = unquote(parsed.password)
    return options


def _primary(settings: Settings, sentinel_class: Any, options: dict[str, Any]) -> Any:
    """A client of the primary through the Sentinels, of `sentinel_class`'s flavour."""
    sentinel = sentinel_class(
        sentinel_addresses(settings.redis_sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S},
    )
    return sentinel.master_for(
        settings.redis_sentinel_master, **_data_options(settings.redis_url), **options
    )


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the primary (socket options and the like in `options`)."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    client: redis.Redis = _primary(settings, Sentinel, options)
    return client


def connect_async(settings: Settings, **options: Any) -> aioredis.Redis:
    """The asyncio flavour of `connect`."""
    if not settings.redis_sentinels:
        return aioredis.Redis.from_url(settings.redis_url, **options)
    client: aioredis.Redis = _primary(settings, AsyncSentinel, options)
    return client


def ack_replicas(settings: Settings) -> int:
    """Replicas that must hold a submitted job before the submit is acknowledged."""
    if settings.redis_ack_replicas is not None:
        return settings.redis_ack_replicas
    return 1 if settings.redis_sentinels else 0
