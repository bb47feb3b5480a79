"""Settings of a worker process (env prefix `LATENTQ_`), on top of the shared ones."""

from functools import lru_cache
from typing import Literal

from pydantic import Field

from jobs.settings import Settings

VAE_TILING_PIXELS_DEFAULT = 1536 * 1536
"""Above this many output pixels the VAE decodes in tiles (a 1536x1536 image or larger)."""


class WorkerSettings(Settings):
    models: str = ""
    """Comma-separated model ids this worker holds warm; empty means every catalogue model."""

    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`. One process per GPU."""

    attention: Literal["auto", "xformers", "sdpa"] = "auto"
    """CUDA attention kernels: xformers when importable (auto), else PyTorch SDPA."""

    compile: bool = False
    """(CUDA) `torch.compile` the UNet or transformer at start, warmed up at the model's
    native size: faster steps after a start that takes minutes longer."""

    vae_tiling_pixels: int = Field(default=VAE_TILING_PIXELS_DEFAULT, ge=0)
    """Outputs above this many pixels decode in tiles, and a job's images one at a time,
    to bound the VAE's memory (0: never)."""

    torch_threads: int | None = Field(default=None, ge=1)
    """Intra-op CPU threads. With W workers on C cores, C/W avoids oversubscription."""

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """Port of this worker's `/metrics` and `/readyz` (0: none). One per worker on a host."""

    metrics_host: str = "127.0.0.1"
    """Address of that port: loopback, unless something scrapes or probes the worker from
    elsewhere (`0.0.0.0` in the compose and Kubernetes deployments)."""

    drain_grace_s: float = Field(default=300, ge=0)
    """On SIGTERM, how long the running job may still take; past it, it is given back to its
    queue. Keep the orchestrator's kill timeout (terminationGracePeriodSeconds) above it."""

    recycle_after_jobs: int = Field(default=0, ge=0)
    """Exit (0) after this many jobs so a supervisor starts a fresh process (0: never)."""

    batch_max: int = Field(default=4, ge=1, le=64)
    """Micro-batching: the most images one pipeline call may run for several compatible
    txt2img jobs taken together (1: never batch)."""

    batch_wait_ms: float = Field(default=0, ge=0, le=1000)
    """How long a job may wait for companions when none is queued yet (0: a lone job
    never waits)."""

    batch_max_pixels: int | None = Field(default=None, ge=0)
    """The most output pixels of one batched call: bigger images run alone. Default: 4
    images of 512x512 on CUDA, 4 of 256x256 on the CPU (where batching stops paying off
    at large sizes)."""

    worker_name: str | None = None
    """Name in RQ and in `GET /v1/models`; default host:pid."""

    def model_ids(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
