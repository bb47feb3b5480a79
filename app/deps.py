"""What routes get injected; built once in the app's lifespan, overridable in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request

from app.auth import CallerDep, KeyRing
from app.events import EventHub
from app.fairness import OpenHolds
from app.ratelimit import RateLimiter
from app.service import JobService
from app.settings import AppSettings
from jobs.storage import Storage


@dataclass
class State:
    settings: AppSettings
    redis: redis.Redis
    storage: Storage
    jobs: JobService
    hub: EventHub
    keys: KeyRing
    limiter: RateLimiter
    holds: OpenHolds | None = None
    """Each key's open streams and waits (with API keys)."""


def get_state(request: Request) -> State:
    state: State = request.app.state.latentq
    return state


def get_jobs(request: Request) -> JobService:
    return get_state(request).jobs


StateDep = Annotated[State, Depends(get_state)]
JobsDep = Annotated[JobService, Depends(get_jobs)]


def get_scopes(request: Request, caller: CallerDep) -> frozenset[str]:
    """What the calling key may do (`app.scopes`)."""
    return get_state(request).keys.scopes_of(caller)


ScopesDep = Annotated[frozenset[str], Depends(get_scopes)]
