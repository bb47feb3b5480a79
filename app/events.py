"""One Redis pub/sub connection per API process, fanned out to every waiter in it.

SSE streams and `Prefer: wait` requests each `listen()` to a job's channel; the hub keeps a
single subscription per channel however many listeners it has, and re-subscribes everything
after a lost connection. Listeners still re-read the record now and then, so a message missed
while Redis was away only delays them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from jobs import events, keys

log = logging.getLogger(__name__)

Message = dict[str, Any]


class EventHub:
    def __init__(self, connection: aioredis.Redis) -> None:
        self._redis = connection
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
        self._listeners: dict[str, set[asyncio.Queue[Message]]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            await self._redis.aclose()

    @asynccontextmanager
    async def listen(
        self, job_id: str, confirm_s: float = 2.0
    ) -> AsyncIterator[asyncio.Queue[Message]]:
        """A queue of the job's messages, subscribed (confirmed by Redis, or after `confirm_s`)
        before it is handed out: whatever the caller reads from the record afterwards is either
        already there or still to come on the queue."""
        channel = keys.events(job_id)
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=256)
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(queue)
        try:
            if len(listeners) == 1:
                confirmed = self._confirmed[channel] = asyncio.Event()
                try:
                    await self._pubsub.subscribe(channel)
                    self._wake.set()
                    await asyncio.wait_for(confirmed.wait(), confirm_s)
                except (TimeoutError, aioredis.RedisError, OSError) as exc:
                    # The caller's periodic re-reads of the record still see the job through.
                    log.debug("subscription to %s not confirmed: %s", channel, exc)
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners:
                self._listeners.pop(channel, None)
                self._confirmed.pop(channel, None)
                try:
                    await self._pubsub.unsubscribe(channel)
                except (aioredis.RedisError, OSError):
                    pass

    async def _run(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost connection: wait, then subscribe everything again
                log.warning("event hub: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
                await self._resubscribe()

    async def _resubscribe(self) -> None:
        try:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        except Exception:  # the old connection is gone anyway
            pass
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
        if self._listeners:
            try:
                await self._pubsub.subscribe(*self._listeners)
            except (aioredis.RedisError, OSError) as exc:
                log.warning("event hub: re-subscribe failed: %s", exc)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return
        if message.get("type") == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None:
                confirmed.set()
            return
        if message.get("type") != "message":
            return
        parsed = events.parse(message.get("data", b""))
        if parsed is None:
            return
        for queue in self._listeners.get(channel, ()):
            if queue.full():
                # A slow reader loses old progress, never the latest state: it re-reads the
                # record on the next status message.
                queue.get_nowait()
            queue.put_nowait(parsed)
