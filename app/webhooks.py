"""The webhook dispatcher: every API replica sends due deliveries from the Redis outbox.

Deliveries run concurrently (`LATENTQ_WEBHOOK_CONCURRENCY` at once, at most
`LATENTQ_WEBHOOK_PER_HOST` to one receiving host), each within a total deadline
(`LATENTQ_WEBHOOK_TIMEOUT_S`: connect, send and the answer's status line and headers), and
the answer's body is never read. So a receiver that trickles its answer, sends an endless
body or never answers costs one slot for one deadline, and delays only its own host.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool

from jobs.settings import Settings
from jobs.webhooks import Delivery, Outbox, WebhookRefused, check_url, resolve, signature

log = logging.getLogger(__name__)

IDLE_S = 0.25
"""How long the dispatcher sleeps when nothing is due."""

HOST_BUSY_S = 0.5
"""A delivery to a host that already has its share of deliveries running is put back this
long."""


class Dispatcher:
    def __init__(self, outbox: Outbox, settings: Settings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.secret = settings.webhook_key()
        self.deadline_s = settings.webhook_timeout_s
        # Never follow redirects: a receiver could bounce us to an internal address.
        self.client = httpx.AsyncClient(
            timeout=self.deadline_s,
            follow_redirects=False,
            headers={"User-Agent": "latentq-webhooks/0.1"},
            limits=httpx.Limits(max_connections=settings.webhook_concurrency),
        )
        self.slots = asyncio.Semaphore(settings.webhook_concurrency)
        self.running: Counter[str] = Counter()
        """Deliveries being sent, by receiving host."""
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    async def run_once(self) -> bool:
        """Start sending one due delivery (waiting for a free slot first); False when none
        was due."""
        await self.slots.acquire()
        try:
            delivery = await run_in_threadpool(self.outbox.claim)
        except BaseException:
            self.slots.release()
            raise
        if delivery is None:
            self.slots.release()
            return False
        host = (urlsplit(delivery.url).hostname or "").lower()
        if self.running[host] >= self.settings.webhook_per_host:
            self.slots.release()
            await run_in_threadpool(self.outbox.retry_at, delivery, time.time() + HOST_BUSY_S)
            return True
        self.running[host] += 1
        task = asyncio.create_task(self._deliver(delivery, host), name=f"webhook {delivery.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _deliver(self, delivery: Delivery, host: str) -> None:
        try:
            try:
                error = await asyncio.wait_for(self.send(delivery), self.deadline_s)
            except TimeoutError:
                error = f"no answer within {self.deadline_s:g}s"
            await run_in_threadpool(self._settle, delivery, error)
        except Exception as exc:  # Redis away: the claim's lease runs out, and it comes due
            log.warning("webhook dispatcher: %s", exc)
        finally:
            self.running[host] -= 1
            if self.running[host] <= 0:
                del self.running[host]
            self.slots.release()

    def _settle(self, delivery: Delivery, error: str | None) -> None:
        """Record how the delivery went: done, due again later, or dropped."""
        if error is None:
            self.outbox.done(delivery)
            return
        delivery.attempts += 1
        if delivery.retry and delivery.attempts < self.settings.webhook_max_attempts:
            delay = self.settings.webhook_backoff_s * 2 ** (delivery.attempts - 1)
            delay *= random.uniform(0.8, 1.2)  # spread retries of many jobs apart
            log.info(
                "webhook %s for %s failed (%s); retry %d in %.1fs",
                delivery.event,
                delivery.job_id,
                error,
                delivery.attempts,
                delay,
            )
            self.outbox.retry_at(delivery, time.time() + delay)
        else:
            log.warning(
                "webhook %s for %s dropped after %d attempts: %s",
                delivery.event,
                delivery.job_id,
                delivery.attempts,
                error,
            )
            self.outbox.done(delivery)

    async def send(self, delivery: Delivery) -> str | None:
        """POST one delivery; None on a 2xx answer, else what went wrong. The caller bounds
        the whole of it by the deadline."""
        body = delivery.body.encode()
        timestamp = int(time.time())
        try:
            host, port = check_url(delivery.url)
            addresses = await run_in_threadpool(
                resolve, host, port, self.settings.webhook_allow_private
            )
        except WebhookRefused as exc:
            return exc.message
        url = httpx.URL(delivery.url)
        headers = {
            "Content-Type": "application/json",
            "Host": url.netloc.decode(),
            "Webhook-Id": delivery.id,
            "Webhook-Timestamp": str(timestamp),
            "Webhook-Event": delivery.event,
            "Webhook-Signature": signature(self.secret, timestamp, body),
        }
        try:
            # Connect to the address that was checked, keeping the name for TLS (SNI and the
            # certificate check) and for the Host header. Only the status matters: the body
            # is never read (closing the stream drops the connection instead).
            async with self.client.stream(
                "POST",
                url.copy_with(host=addresses[0]),
                content=body,
                headers=headers,
                extensions={"sni_hostname": host},
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"


async def dispatch_forever(dispatcher: Dispatcher) -> None:
    while True:
        try:
            busy = await dispatcher.run_once()
        except Exception as exc:  # Redis away: try again shortly
            log.warning("webhook dispatcher: %s", exc)
            busy = False
        if not busy:
            await asyncio.sleep(IDLE_S)
