"""Job events on Redis pub/sub: one channel per job (`keys.events`), small JSON messages.

Every status change and every (throttled) progress write publishes on the job's channel,
from inside the same Lua script that changes the record, so no change goes unannounced.
Messages are notifications; readers take the whole Job from the record.

    {"event": "status", "status": "running"}
    {"event": "progress", "step": 3, "total_steps": 20, "fraction": 0.15, "eta_s": 4.2}
"""

from __future__ import annotations

import json
from typing import Any


def status_message(status: str) -> str:
    return json.dumps({"event": "status", "status": status}, separators=(",", ":"))


def parse(data: bytes | str) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "event" in message else None
