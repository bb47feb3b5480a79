"""What an API key may do beyond submitting and reading its own jobs.

A `LATENTQ_API_KEYS` entry may end with its scopes, `+`-separated:
`alice:<sha256 hex>:priority:high+admin`.

- `priority:high` — submit jobs with `"priority": "high"` (others get 403
  `priority_not_allowed`);
- `admin` — every other scope, and reading, following and cancelling any key's jobs (and
  fetching their files).

An entry without scopes has those of `LATENTQ_DEFAULT_KEY_SCOPES` (none by default: such a
key submits at `normal` and `low` priority). In open mode (no keys) the one caller may use
every priority (there is nobody to be fair to) and reads the jobs submitted in open mode.
"""

from __future__ import annotations

from jobs.errors import Forbidden
from jobs.protocol import Priority

PRIORITY_HIGH = "priority:high"
ADMIN = "admin"

EVERY_SCOPE: frozenset[str] = frozenset({PRIORITY_HIGH, ADMIN})
"""Every scope."""
OPEN_MODE: frozenset[str] = frozenset({PRIORITY_HIGH})
"""What the caller of a service without keys has: every priority; its own jobs only."""


def parse_scopes(text: str) -> frozenset[str]:
    """Scopes from `a+b` (or `a,b` in a setting); `ValueError` naming an unknown one."""
    scopes = frozenset(s.strip() for s in text.replace(",", "+").split("+") if s.strip())
    unknown = sorted(scopes - EVERY_SCOPE)
    if unknown:
        raise ValueError(
            f"unknown API key scope {unknown[0]!r}; the scopes are {', '.join(sorted(EVERY_SCOPE))}"
        )
    return EVERY_SCOPE if ADMIN in scopes else scopes


def owner_filter(caller: str, scopes: frozenset[str]) -> str | None:
    """The owner whose jobs the caller may see: its own, or (admin) anyone's (None)."""
    return None if ADMIN in scopes else caller


def check_priority(priority: Priority, scopes: frozenset[str]) -> None:
    if priority is Priority.HIGH and PRIORITY_HIGH not in scopes:
        raise Forbidden(
            "this API key may not submit high-priority jobs (it lacks the priority:high "
            "scope); submit at normal or low priority",
            code="priority_not_allowed",
            param="priority",
        )
