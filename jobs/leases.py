"""Letting go of a dead worker's leases at once.

A running job's lease runs out `lease_s` after its worker's last heartbeat, and only then
does a reaper re-queue the job. Whoever knows for certain that a worker is dead — the
supervisor that saw its process exit — need not wait for that: it drops the leases that
worker holds, and the next reaper round (every worker's and API replica's) re-queues the
jobs. Nothing else changes here; the reaper still makes the move.
"""

from __future__ import annotations

import json
from typing import cast

import redis

from jobs import keys

# KEYS[1] the running set; ARGV[1] the worker as its leases store it (JSON). Deletes every
# lease of a running job that this worker holds, and returns those jobs' ids.
_RELEASE = """
local released = {}
for _, job_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = ARGV[2] .. job_id
  if redis.call('GET', lease) == ARGV[1] then
    redis.call('DEL', lease)
    table.insert(released, job_id)
  end
end
return released
"""


def release_leases(connection: redis.Redis, worker: str) -> list[str]:
    """Drop the leases `worker` holds (it is known to be dead); the ids of its jobs."""
    prefix = keys.lease("")
    released = connection.eval(_RELEASE, 1, keys.RUNNING, json.dumps(worker), prefix)
    return sorted(raw.decode() for raw in cast(list[bytes], released))
