"""The webhook dispatcher: every API replica sends due deliveries from the Redis outbox."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx
from starlette.concurrency import run_in_threadpool

from jobs.settings import Settings
from jobs.webhooks import Delivery, Outbox, WebhookRefused, check_url, resolve, signature

log = logging.getLogger(__name__)

IDLE_S = 0.25
"""How long the dispatcher sleeps when nothing is due."""


class Dispatcher:
    def __init__(self, outbox: Outbox, settings: Settings) -> None:
        self.outbox = outbox
        self.settings = settings
        self.secret = settings.webhook_key()
        # Never follow redirects: a receiver could bounce us to an internal address.
        self.client = httpx.Client(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "latentq-webhooks/0.1"},
        )

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> bool:
        """Send one due delivery; False when none was due."""
        delivery = self.outbox.claim()
        if delivery is None:
            return False
        error = self.send(delivery)
        if error is None:
            self.outbox.done(delivery)
            return True
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
        return True

    def send(self, delivery: Delivery) -> str | None:
        """POST one delivery; None on a 2xx answer, else what went wrong."""
        body = delivery.body.encode()
        timestamp = int(time.time())
        try:
            host, port = check_url(delivery.url)
            address = resolve(host, port, self.settings.webhook_allow_private)[0]
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
            # certificate check) and for the Host header.
            response = self.client.post(
                url.copy_with(host=address),
                content=body,
                headers=headers,
                extensions={"sni_hostname": host},
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


async def dispatch_forever(dispatcher: Dispatcher) -> None:
    while True:
        try:
            busy = await run_in_threadpool(dispatcher.run_once)
        except Exception as exc:  # Redis away: try again shortly
            log.warning("webhook dispatcher: %s", exc)
            busy = False
        if not busy:
            await asyncio.sleep(IDLE_S)
