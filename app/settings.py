"""Settings of the API process (env prefix `LATENTQ_`), on top of the shared ones."""

from functools import lru_cache

from pydantic import AliasChoices, Field

from jobs.settings import Settings


class AppSettings(Settings):
    max_request_bytes: int = Field(default=48 * 2**20, ge=1024)
    """Largest request body; larger ones get 413 before they are read."""

    max_image_bytes: int = Field(default=24 * 2**20, ge=1024)
    """Largest encoded input image."""

    api_keys: str = ""
    """`NAME:SHA256HEX` entries, comma-separated (`python -m app.keys new NAME`). Empty: the
    service is open, and `/v1` answers loopback clients only."""

    default_key_scopes: str = ""
    """Scopes of the `api_keys` entries that name none (`app.scopes`), `+`-separated: for
    example `priority:high` to let every such key submit high-priority jobs."""

    key_queue_share: float = Field(default=0.25, gt=0, le=1)
    """With API keys, the most of a model's queue (`queue_max`) one key's waiting jobs may
    fill; past it that key's submits get 429 while others' are still taken (1: no share)."""

    streams_per_key: int = Field(default=32, ge=1)
    """With API keys, the most requests one key may hold open at once across replicas:
    event streams, `Prefer: wait` submits and the OpenAI-compatible routes' waits."""

    allow_open: bool = False
    """Without API keys, answer `/v1` from any address (behind a proxy that authenticates)."""

    open_hosts: str = ""
    """Without API keys: host names of this machine, besides loopback ones, that requests
    may address (comma-separated). Any other `Host` is refused (DNS rebinding)."""

    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("FORWARDED_ALLOW_IPS", "forwarded_allow_ips"),
    )
    """uvicorn's own variable: the proxies whose `X-Forwarded-For` it believes (with
    `--proxy-headers`). Open mode refuses to start when it trusts everyone (`*`)."""

    rate_limit_per_min: float = Field(default=120, ge=0)
    """Submits per minute per key, shared by all replicas (0: no limit)."""

    rate_limit_burst: int = Field(default=30, ge=1)
    """Submits a key may make at once before the per-minute rate applies."""

    retention_sweep_s: float = Field(default=600, gt=0)
    """How often each API replica deletes the files of jobs older than `job_ttl_s`."""

    openai_wait_s: float = Field(default=600, gt=0)
    """How long the OpenAI-compatible routes hold a request for its job (504 past it)."""

    max_image_pixels: int = Field(default=2048 * 2048, ge=64 * 64)
    """Largest input image in pixels, checked from its header before it is decoded."""


@lru_cache
def get_app_settings() -> AppSettings:
    return AppSettings()
