"""Checking a webhook delivery on the receiving side.

Each delivery carries `Webhook-Timestamp` and `Webhook-Signature: v1=<hex>`, the
HMAC-SHA256 of ``"<timestamp>.<body>"`` with the webhook secret (several `v1=` values,
comma-separated, while the service rotates its secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def verify_webhook(
    secret: bytes | str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True when `body` (the raw request body) was signed with `secret` and sent within
    `tolerance_s` seconds of `now`; `headers` are the delivery's, any letter case."""
    key = secret.encode() if isinstance(secret, str) else secret
    lower = {name.lower(): value for name, value in headers.items()}
    timestamp = lower.get("webhook-timestamp", "")
    signatures = lower.get("webhook-signature", "")
    if _TIMESTAMP.fullmatch(timestamp) is None:  # not str.isdigit(), which takes "²"
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256)
    expected = "v1=" + mac.hexdigest()
    return any(hmac.compare_digest(expected, part.strip()) for part in signatures.split(","))
