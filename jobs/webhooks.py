"""Webhooks: signed notifications of a job's start, progress and completion.

Deliveries are written to Redis by whoever changes the job (worker or API) and sent by a
dispatcher in each API replica, so a slow or failing receiver never holds up a job:

- `keys.WEBHOOKS_DUE` (sorted set) — delivery ids by the time they are due;
- `keys.webhook(id)` — the delivery (url, event, body, attempts), expiring after a day.

Each request carries `Webhook-Id`, `Webhook-Timestamp` (unix seconds), `Webhook-Event` and
`Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from jobs import keys
from jobs.errors import InvalidRequest
from jobs.records import JobRecord
from jobs.storage import Storage
from jobs.views import job_view

DELIVERY_TTL_S = 24 * 3600


# -- who may be called -----------------------------------------------------------------------


class WebhookRefused(InvalidRequest):
    code = "webhook_refused"


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): a translator on the path turns the last 32 bits
into the IPv4 address it connects to."""
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
"""Local-use NAT64 (RFC 8215): a site's own translator, with a prefix length of its choice,
so the embedded IPv4 address cannot be told; never public."""
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which the packets may end up at."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found = [address.sixtofour] if address.sixtofour is not None else []
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in net for net in (_NAT64, _IPV4_COMPATIBLE, _IPV4_TRANSLATED)):
        found.append(low32)
    return found


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _is_public(address.ipv4_mapped)
        if address in _NAT64_LOCAL:
            return False
        if not all(_is_public(inner) for inner in _embedded_ipv4(address)):
            return False
    return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; `WebhookRefused` for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("webhook is not a valid URL", param="webhook") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook must be an http:// or https:// URL", param="webhook")
    if parts.username or parts.password:
        raise WebhookRefused("webhook URLs may not carry credentials", param="webhook")
    return parts.hostname, port


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to call `host` at, all of them public unless `allow_private`.

    Deliveries connect to these very addresses (not to a second lookup of the name), so a
    name cannot resolve to a public address when checked and to a private one when called.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"webhook host {host!r} does not resolve", param="webhook") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address.split("%")[0])):
                raise WebhookRefused(
                    f"webhook host {host!r} is a private, loopback or link-local address; "
                    "such targets are refused",
                    param="webhook",
                )
    return addresses


# -- signing ---------------------------------------------------------------------------------


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


# -- the outbox ------------------------------------------------------------------------------


@dataclass
class Delivery:
    id: str
    url: str
    event: str
    body: str
    job_id: str
    attempts: int = 0
    retry: bool = True
    """Progress deliveries are not retried: a later one supersedes them."""

    def dump(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def new(
        cls, url: str, event: str, payload: dict[str, Any], job_id: str, retry: bool = True
    ) -> Delivery:
        return cls(
            id="wh_" + secrets.token_urlsafe(12),
            url=url,
            event=event,
            job_id=job_id,
            body=json.dumps(payload, separators=(",", ":")),
            retry=retry,
        )


# Take the earliest due delivery and hide it for a lease, so two dispatchers never send it at
# once; a dispatcher that dies mid-send leaves it to come due again when the lease ends.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
return ids[1]
"""


class Outbox:
    def __init__(self, connection: redis.Redis, lease_s: float = 60) -> None:
        self.redis = connection
        self.lease_s = lease_s
        self._claim = connection.register_script(_CLAIM)

    def claim(self) -> Delivery | None:
        now = time.time()
        raw_id = self._claim(keys=[keys.WEBHOOKS_DUE], args=[now, now + self.lease_s])
        if not raw_id:
            return None
        delivery_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        raw = cast(bytes | None, self.redis.get(keys.webhook(delivery_id)))
        if raw is None:  # expired: nothing left to send
            self.redis.zrem(keys.WEBHOOKS_DUE, delivery_id)
            return None
        return Delivery(**json.loads(raw))

    def done(self, delivery: Delivery) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.WEBHOOKS_DUE, delivery.id)
            pipe.delete(keys.webhook(delivery.id))
            pipe.execute()

    def retry_at(self, delivery: Delivery, due: float) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.webhook(delivery.id), delivery.dump(), ex=DELIVERY_TTL_S)
            pipe.zadd(keys.WEBHOOKS_DUE, {delivery.id: due})
            pipe.execute()


# -- what happened ---------------------------------------------------------------------------


class Notices:
    """The deliveries that tell a job's receiver what happened to it. `jobs.lifecycle` writes
    them to the outbox in the same atomic step as the move they announce."""

    def __init__(self, storage: Storage, *, base_url: str, url_ttl_s: int) -> None:
        self.storage = storage
        self.base_url = base_url
        self.url_ttl_s = url_ttl_s

    def about(self, record: JobRecord, event: str) -> Delivery | None:
        """A `start` or `completed` delivery with the whole Job, if the job asked for it."""
        url = record.wants_webhook(event)
        if url is None:
            return None
        job = job_view(record, self.storage, base_url=self.base_url, url_ttl_s=self.url_ttl_s)
        return Delivery.new(url, event, {"event": event, "job": job}, record.id)

    @staticmethod
    def progress(record: JobRecord, progress: dict[str, Any]) -> Delivery | None:
        """A `progress` delivery, if the job asked for them; never retried (the next one
        supersedes it)."""
        url = record.wants_webhook("progress")
        if url is None:
            return None
        payload = {"event": "progress", "job_id": record.id, "progress": progress}
        return Delivery.new(url, "progress", payload, record.id, retry=False)
