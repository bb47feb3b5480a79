"""What routes get injected; built once in the app's lifespan, overridable in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request

from app.auth import KeyRing
from app.events import EventHub
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


def get_state(request: Request) -> State:
    state: State = request.app.state.latentq
    return state


def get_jobs(request: Request) -> JobService:
    return get_state(request).jobs


StateDep = Annotated[State, Depends(get_state)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
