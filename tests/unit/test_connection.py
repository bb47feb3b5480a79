"""jobs.connection: the Sentinel settings as the clients get them."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from jobs.connection import ack_replicas, connect, sentinel_addresses
from jobs.settings import Settings


def test_sentinel_addresses() -> None:
    assert sentinel_addresses("a:26380, b ,[::1]:1") == [("a", 26380), ("b", 26379), ("::1", 1)]
    assert sentinel_addresses("") == []
    with pytest.raises(ValueError, match="host:port"):
        sentinel_addresses("a:x")


def test_plain_url_without_sentinels() -> None:
    client = connect(Settings(redis_url="redis://:pw@example:6390/3"))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "example", 6390, 3, "pw"
    )  # fmt: skip
    assert ack_replicas(Settings()) == 0


def test_through_sentinels_the_url_gives_database_and_password() -> None:
    settings = Settings(
        redis_url="redis://user:p%40ss@ignored:1/2",
        redis_sentinels="s1:26379,s2:26379",
        redis_sentinel_master="queues",
    )
    client = connect(settings, socket_timeout=5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "queues"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (2, "user", "p@ss")
    assert kwargs["socket_timeout"] == 5
    addresses = [
        c.connection_pool.connection_kwargs["host"] for c in pool.sentinel_manager.sentinels
    ]
    assert addresses == ["s1", "s2"]
    # A replica must hold a submit before it is acknowledged, unless set otherwise.
    assert ack_replicas(settings) == 1
    assert ack_replicas(settings.model_copy(update={"redis_ack_replicas": 0})) == 0
