"""Per-key rate limits shared by every API replica: a token bucket in Redis."""

from __future__ import annotations

import math

import redis

from jobs import keys
from jobs.errors import LatentqError

# KEYS[1] the bucket; ARGV: tokens per second, burst, cost. Time comes from Redis itself, so
# replicas with skewed clocks share one bucket fairly. Returns {allowed, seconds to wait}.
_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(wait)}
"""


class RateLimited(LatentqError):
    status = 429
    code = "rate_limited"


class RateLimiter:
    def __init__(self, connection: redis.Redis, per_minute: float, burst: int) -> None:
        self.per_second = per_minute / 60
        self.burst = burst
        self._take = connection.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def take(self, caller: str) -> None:
        """Spend one submit of `caller`'s budget, or raise `RateLimited` with Retry-After."""
        if self.per_second <= 0:
            return
        allowed, wait = self._take(keys=[keys.rate(caller)], args=[self.per_second, self.burst, 1])
        if not int(allowed):
            retry = max(1, math.ceil(float(wait)))
            raise RateLimited(
                f"too many submits for this key: {self.per_second * 60:g} a minute, bursts of "
                f"{self.burst}; retry in {retry}s",
                headers={"Retry-After": str(retry)},
            )
