"""Idempotency keys: a retried submit with the same key returns the first job.

A key is scoped to its caller and kept for a day (`IDEMPOTENCY_TTL_S`). It also remembers a
fingerprint of the request, so reusing a key for a different request is an error rather
than a silent replay of the wrong job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import cast

import redis

from jobs import keys
from jobs.errors import InvalidRequest

IDEMPOTENCY_TTL_S = 24 * 3600
KEY_MAX_CHARS = 255


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Claim:
    job_id: str
    replay: bool
    """True when the key was already taken by an earlier request: `job_id` is that job."""


def check_key(value: str) -> str:
    if not value or len(value) > KEY_MAX_CHARS or not value.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {KEY_MAX_CHARS} printable characters",
            param="Idempotency-Key",
        )
    return value


def fingerprint(fields: dict[str, object], files: dict[str, bytes]) -> str:
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class IdempotencyKeys:
    def __init__(self, connection: redis.Redis, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        self.redis = connection
        self.ttl_s = ttl_s

    @staticmethod
    def _redis_key(caller: str, key: str) -> str:
        hashed = hashlib.sha256(key.encode()).hexdigest()
        return f"{keys.PREFIX}:idem:{caller}:{hashed}"

    def claim(self, caller: str, key: str, print_: str, job_id: str) -> Claim:
        """Take `key` for `job_id`, or find the job that already holds it."""
        redis_key = self._redis_key(caller, check_key(key))
        value = json.dumps({"job_id": job_id, "fingerprint": print_})
        if self.redis.set(redis_key, value, nx=True, ex=self.ttl_s):
            return Claim(job_id, replay=False)
        raw = cast(bytes | None, self.redis.get(redis_key))
        if raw is None:  # expired between the two calls
            return self.claim(caller, key, print_, job_id)
        held = json.loads(raw)
        if held["fingerprint"] != print_:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request in the last 24 hours; "
                "use a new key for a new request",
                param="Idempotency-Key",
            )
        return Claim(str(held["job_id"]), replay=True)

    def release(self, caller: str, key: str, job_id: str) -> None:
        """Give a key back after the submit it guarded failed (only if it is still ours)."""
        redis_key = self._redis_key(caller, key)
        raw = cast(bytes | None, self.redis.get(redis_key))
        if raw is not None and json.loads(raw)["job_id"] == job_id:
            self.redis.delete(redis_key)

    def forget(self, caller: str, key: str) -> None:
        self.redis.delete(self._redis_key(caller, key))
