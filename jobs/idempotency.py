"""Idempotency keys: a retried submit with the same key returns the first job.

A key is scoped to its caller and kept for a day (`IDEMPOTENCY_TTL_S`). It also remembers a
fingerprint of the request, so reusing a key for a different request is an error rather
than a silent replay of the wrong job.

A claim is `pending` while the request that took it stores its inputs and enqueues its job
(which can take seconds for a large input), and `settled` once the job exists. A retry that
finds a pending claim waits for it to settle, or is told to come back (409 with
`Retry-After`); it never takes the key over. Only the request that holds a claim releases it
(its submit failed), and a settled claim whose job has expired is dropped only if it is
still the very claim that was read. A pending claim whose request died lapses after
`PENDING_TTL_S`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import cast

import redis

from jobs import keys
from jobs.errors import InvalidRequest, LatentqError

IDEMPOTENCY_TTL_S = 24 * 3600
KEY_MAX_CHARS = 255
PENDING_TTL_S = 120
"""Longest a submit may take between claiming its key and its job existing; a claim still
pending after that belonged to a request that died, and lapses."""


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class IdempotencyKeyPending(LatentqError):
    """An earlier request with this key is still being submitted."""

    status = 409
    code = "idempotency_key_pending"


@dataclass(frozen=True)
class Claim:
    job_id: str
    replay: bool
    """True when the key was already taken by an earlier request: `job_id` is that job."""
    pending: bool = False
    """(replay) The earlier request has not yet made its job."""
    raw: bytes = b""
    """(replay) The claim as stored, to drop exactly this one and no later one."""


# Settle or release a claim only if `job_id` still holds it. KEYS: the claim. ARGV: the job
# id, then (settle) the settled value and its TTL in seconds; without them, release.
_OWNED = """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw)['job_id'] ~= ARGV[1] then return 0 end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# Delete the claim only if it is still byte for byte the one that was read.
_DROP_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
        self._owned = connection.register_script(_OWNED)
        self._drop_if_same = connection.register_script(_DROP_IF_SAME)

    @staticmethod
    def _redis_key(caller: str, key: str) -> str:
        hashed = hashlib.sha256(key.encode()).hexdigest()
        return keys.idempotency(caller, hashed)

    def claim(self, caller: str, key: str, print_: str, job_id: str) -> Claim:
        """Take `key` for `job_id` (pending until `settle`), or find the claim that already
        holds it."""
        redis_key = self._redis_key(caller, check_key(key))
        value = json.dumps({"job_id": job_id, "fingerprint": print_, "state": "pending"})
        if self.redis.set(redis_key, value, nx=True, ex=PENDING_TTL_S):
            return Claim(job_id, replay=False)
        raw = cast(bytes | None, self.redis.get(redis_key))
        if raw is None:  # expired or released between the two calls
            return self.claim(caller, key, print_, job_id)
        held = json.loads(raw)
        if held["fingerprint"] != print_:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request in the last 24 hours; "
                "use a new key for a new request",
                param="Idempotency-Key",
            )
        # Claims stored before claims had a state were taken once their job existed.
        pending = held.get("state", "settled") == "pending"
        return Claim(str(held["job_id"]), replay=True, pending=pending, raw=raw)

    def settle(self, caller: str, key: str, print_: str, job_id: str) -> bool:
        """`job_id` exists now: its claim is kept for the whole TTL. False when the claim is
        no longer `job_id`'s (it lapsed while the submit was slower than PENDING_TTL_S)."""
        value = json.dumps({"job_id": job_id, "fingerprint": print_, "state": "settled"})
        redis_key = self._redis_key(caller, key)
        return bool(self._owned(keys=[redis_key], args=[job_id, value, self.ttl_s]))

    def release(self, caller: str, key: str, job_id: str) -> None:
        """Give a key back after the submit it guarded failed (only if it is still ours)."""
        self._owned(keys=[self._redis_key(caller, key)], args=[job_id])

    def drop(self, caller: str, key: str, claim: Claim) -> None:
        """Forget a settled claim whose job has expired, unless it changed since it was read."""
        self._drop_if_same(keys=[self._redis_key(caller, key)], args=[claim.raw])
