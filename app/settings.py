"""Settings of the API process (env prefix `LATENTQ_`), on top of the shared ones."""

from functools import lru_cache

from pydantic import Field

from jobs.settings import Settings


class AppSettings(Settings):
    public_url: str | None = None
    """Base URL clients reach this service at (behind a load balancer). Unset: taken from
    each request, honouring X-Forwarded-* headers from trusted proxies."""

    max_request_bytes: int = Field(default=48 * 2**20, ge=1024)
    """Largest request body; larger ones get 413 before they are read."""

    max_image_bytes: int = Field(default=24 * 2**20, ge=1024)
    """Largest encoded input image."""

    max_image_pixels: int = Field(default=2048 * 2048, ge=64 * 64)
    """Largest input image in pixels, checked from its header before it is decoded."""


@lru_cache
def get_app_settings() -> AppSettings:
    return AppSettings()
