"""Fairness between API keys: a share of each model's queue, and a cap on held requests.

Both are counted in Redis, so every API replica sees the same numbers, and both apply only
with API keys: in open mode there is one caller and nobody to be fair to.

- `QueueShares`: one key's waiting jobs may fill at most a share of a model's queue cap
  (`LATENTQ_KEY_QUEUE_SHARE` × `LATENTQ_QUEUE_MAX`); past it that key's submits get 429
  `queue_share_full` while other keys' are still taken.
- `OpenHolds`: one key may hold at most `LATENTQ_STREAMS_PER_KEY` requests open at once —
  event streams, `Prefer: wait` submits, the OpenAI-compatible routes' waits — or gets 429
  `too_many_streams`. Each hold is released when its request ends however it ends, and
  expires by itself should its replica die (`HOLD_LEASE_S`, renewed while it lasts).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar, cast

import redis
import redis.asyncio as aioredis
from starlette.requests import Request

from jobs import keys
from jobs.errors import LatentqError

log = logging.getLogger(__name__)

T = TypeVar("T")

HOLD_LEASE_S = 30
"""A hold not renewed for this long (its replica died) no longer counts."""

HOLD_RENEW_S = 10.0
"""How often a replica renews the holds it has open."""

RESERVATION_GRACE_S = 60
"""A share's entry whose job record is not there yet (being written) counts this long."""


class QueueShareFull(LatentqError):
    status = 429
    code = "queue_share_full"


class TooManyStreams(LatentqError):
    status = 429
    code = "too_many_streams"


# KEYS[1] the key's entries for one model (a sorted set: job id → when it was added);
# ARGV: the job record key prefix, the most entries, the new job id, the set's TTL, the
# reservation grace. First drops the entries of jobs no longer waiting (an entry without a
# record counts for the grace: its record is being written), then adds the new one if
# there is room.
# Returns the number of waiting jobs before, and 1 if the new one was added.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local young = now - tonumber(ARGV[5])
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local waiting = 0
for i = 1, #entries, 2 do
  local status = redis.call('HGET', ARGV[1] .. entries[i], 'status')
  if status == '"queued"' or (not status and tonumber(entries[i + 1]) > young) then
    waiting = waiting + 1
  else
    redis.call('ZREM', KEYS[1], entries[i])
  end
end
if waiting >= tonumber(ARGV[2]) then return {waiting, 0} end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {waiting, 1}
"""


class QueueShares:
    def __init__(self, connection: redis.Redis, queue_max: int, share: float, ttl_s: int):
        self.redis = connection
        self.most = max(1, math.floor(queue_max * share))
        self.share = share
        self.ttl_s = ttl_s
        self._reserve = connection.register_script(_RESERVE)

    def reserve(self, owner: str, model_id: str, job_id: str) -> None:
        """Count `job_id` among `owner`'s waiting jobs for the model, or raise
        `QueueShareFull` when that key already has its share waiting."""
        waiting, added = self._reserve(
            keys=[keys.share(model_id, owner)],
            args=[keys.job(""), self.most, job_id, self.ttl_s, RESERVATION_GRACE_S],
        )
        if not int(added):
            raise QueueShareFull(
                f"this API key already has {int(waiting)} jobs waiting for model {model_id}, "
                f"its share of the queue ({self.share:g} of {self.most / self.share:.0f}); "
                "retry once some have started",
                headers={"Retry-After": "30"},
            )

    def release(self, owner: str, model_id: str, job_id: str) -> None:
        """Forget a reservation whose job was not accepted after all."""
        self.redis.zrem(keys.share(model_id, owner), job_id)


# KEYS[1] the caller's holds (a sorted set: hold id → when it expires); ARGV: the most holds,
# the new hold's id, the lease in seconds. Returns 1 if the hold was taken.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: holds sets; ARGV: the lease, then one hold id per key. Pushes each hold's expiry on.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


class OpenHolds:
    def __init__(self, connection: aioredis.Redis, per_key: int) -> None:
        self.redis = connection
        self.per_key = per_key
        self._open: dict[str, str] = {}
        """This replica's holds: hold id → the holds set it is in."""
        self._hold = connection.register_script(_HOLD)
        self._renew = connection.register_script(_RENEW)

    @asynccontextmanager
    async def hold(self, caller: str) -> AsyncIterator[None]:
        """One of `caller`'s open requests, for as long as the block runs; `TooManyStreams`
        when the caller already holds its most."""
        key, hold_id = keys.holds(caller), secrets.token_hex(8)
        taken = await cast(
            Awaitable[int], self._hold(keys=[key], args=[self.per_key, hold_id, HOLD_LEASE_S])
        )
        if not int(taken):
            raise TooManyStreams(
                f"this API key already holds {self.per_key} requests open (event streams and "
                "waits); close one, or poll GET /v1/jobs/{id} instead",
                headers={"Retry-After": "10"},
            )
        self._open[hold_id] = key
        try:
            yield
        finally:
            self._open.pop(hold_id, None)
            try:
                await self.redis.zrem(key, hold_id)
            except (aioredis.RedisError, OSError) as exc:  # it expires by itself
                log.warning("could not release a hold of %s: %s", caller, exc)

    async def renew_forever(self) -> None:
        """Keep this replica's holds from expiring while their requests last."""
        while True:
            await asyncio.sleep(HOLD_RENEW_S)
            held = list(self._open.items())
            if not held:
                continue
            try:
                await self._renew(
                    keys=[key for _, key in held], args=[HOLD_LEASE_S, *(h for h, _ in held)]
                )
            except (aioredis.RedisError, OSError) as exc:
                log.warning("could not renew open holds: %s", exc)


async def unless_disconnected(request: Request, waiting: Awaitable[T]) -> T | None:
    """`waiting`'s result, or None as soon as the client has gone (its wait is dropped)."""
    task = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, gone):
            if not pending.done():
                pending.cancel()
    return task.result() if task.done() and not task.cancelled() else None


async def _disconnect(request: Request) -> None:
    # The body has been read: what `receive` still has to say is that the client left.
    while (await request.receive())["type"] != "http.disconnect":
        pass
