"""Settings shared by the API and the workers (env prefix `LATENTQ_`).

Read through `get_settings()`, never at import time, so tests and tools can set the
environment first.
"""

import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_FILE = "signing.key"
WEBHOOK_SECRET_FILE = "webhook.key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LATENTQ_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the queues, job records and worker presence live. With Sentinels: only the
    database number, user and password of it count."""

    redis_sentinels: str = ""
    """Redis Sentinels as `host:port,host:port,...`; set: connect to the primary they name
    for `redis_sentinel_master`, and follow it through failovers (jobs/connection.py)."""

    redis_sentinel_master: str = "latentq"
    """The name the Sentinels monitor the primary under."""

    redis_ack_replicas: int | None = Field(default=None, ge=0)
    """Replicas that must have a submitted job before the submit is acknowledged (Redis
    `WAIT`): a primary lost right after a 202 then loses no acknowledged job. Unset: 1 with
    Sentinels, else 0 (off)."""

    redis_ack_timeout_ms: int = Field(default=500, ge=1)
    """How long a submit waits for those replicas. Past it the job is acknowledged all the
    same (it is on the primary) and a warning is logged: a lost replica slows submits by this
    much but does not stop them."""

    data_dir: Path = Path("var")
    """Local storage of input and output images (and the generated signing key)."""

    catalog: Path = Path("models.toml")
    """The model catalogue file (TOML)."""

    signing_secret: SecretStr | None = None
    """HMAC key of file URLs. Unset: generated once and kept in `data_dir/signing.key`.
    Set it explicitly when API replicas and workers do not share `data_dir`."""

    storage: Literal["local", "s3"] = "local"
    """Where images live: files under `data_dir`, or an S3-compatible bucket."""

    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    """For S3-compatible servers (MinIO, …); unset for AWS. Credentials come from the usual
    AWS_* variables or instance roles."""
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    """A folder inside the bucket for everything this service writes."""
    s3_public_endpoint_url: str | None = None
    """The endpoint clients reach the bucket at, when it differs from `s3_endpoint_url` (a
    MinIO inside a compose network): presigned URLs are made for this one."""
    s3_public_url: str | None = None
    """A public base URL of the bucket (a CDN, …): image URLs use it instead of presigning."""

    url_ttl_s: int = Field(default=3600, ge=1)
    """How long a signed file URL stays valid."""

    job_ttl_s: int = Field(default=86400, ge=60)
    """How long jobs are kept: records, input and output images (retention)."""

    queue_max: int = Field(default=1000, ge=1)
    """Most jobs waiting for one model before submits are refused with 429."""

    public_url: str | None = None
    """Base URL clients reach the API at (behind a load balancer), for file URLs. Unset: the
    API takes it from each request; webhook bodies then carry paths without a host."""

    webhook_secret: SecretStr | None = None
    """HMAC key of webhook signatures. Unset: generated once into `data_dir/webhook.key`."""

    webhook_allow_private: bool = False
    """Allow webhooks to private, loopback and link-local addresses (off: refused)."""

    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    """Deliveries of `start` and `completed` are tried this often before they are dropped."""

    webhook_backoff_s: float = Field(default=5.0, gt=0)
    """Wait before the first retry; it doubles with each further one."""

    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long one delivery may take in all (connect, send, the answer's status and
    headers; its body is never read)."""

    webhook_concurrency: int = Field(default=32, ge=1, le=1024)
    """Deliveries each API replica sends at once."""

    webhook_per_host: int = Field(default=4, ge=1)
    """Deliveries each API replica sends to one receiving host at once; more wait their turn,
    so a slow host delays only its own."""

    lease_s: float = Field(default=15.0, ge=1)
    """A running job's lease: renewed at each step; once it runs out, the job is taken to
    have lost its worker. Keep it above the slowest step (and VAE decode) of any model: a
    real model on a CPU can need a minute a step."""

    reap_interval_s: float = Field(default=3.0, gt=0)
    """How often each worker and API replica looks for running jobs with lost leases."""

    adrift_after_s: float = Field(default=5.0, gt=0)
    """A queued job seen on no queue for this long is put back on its queue (its worker died
    between taking it off the queue and starting it). Keep it above the longest pause a
    live worker may take between the two."""

    poison_limit: int = Field(default=2, ge=1)
    """Worker losses after which a job fails with `worker_lost` instead of running again."""

    log_format: Literal["json", "text"] = "json"
    """JSON lines (one object a line, for log pipelines) or plain text."""

    log_level: str = "INFO"

    job_timeout_s: int = Field(default=1800, ge=10)
    """Longest any job may run; each job's own limit is derived from its work (below)."""

    job_timeout_floor_s: int = Field(default=60, ge=1)
    """The least time limit of a job, however small its work."""

    timeout_s_per_mp_step: float = Field(default=1.0, gt=0)
    """Seconds a job may take per megapixel-step (width × height / 10⁶ × steps × n) on top
    of the floor. The default suits a GPU, or small models on a CPU; raise it for real models
    on a CPU."""

    max_work_mp_steps: float = Field(default=1000, gt=0)
    """Most work one job may ask for, in megapixel-steps; larger jobs are refused (422)."""

    def job_timeout(self, work_mp_steps: float) -> int:
        limit = self.job_timeout_floor_s + self.timeout_s_per_mp_step * work_mp_steps
        return int(min(self.job_timeout_s, limit))

    def signing_key(self) -> bytes:
        """The URL signing key: the configured secret, else the one persisted on first use."""
        if self.signing_secret is not None:
            value = self.signing_secret.get_secret_value()
            _check_secret("LATENTQ_SIGNING_SECRET", value)
            return value.encode()
        return _persisted_key(self.data_dir / SECRET_FILE)

    def webhook_key(self) -> bytes:
        """The webhook signing key: configured, else persisted on first use."""
        if self.webhook_secret is not None:
            value = self.webhook_secret.get_secret_value()
            _check_secret("LATENTQ_WEBHOOK_SECRET", value)
            return value.encode()
        return _persisted_key(self.data_dir / WEBHOOK_SECRET_FILE)


def _check_secret(name: str, value: str) -> None:
    if len(value) < 16:
        raise ValueError(f"{name} must be at least 16 characters")
    if "change-me" in value.lower():
        raise ValueError(f"{name} still holds the example's placeholder; set a real secret")


def _persisted_key(path: Path) -> bytes:
    """The key kept in `path`, made there first if there is none.

    Several processes may start together on one shared volume, each of them PID 1 in its
    container: each writes its candidate through a temp file of its own (random name,
    created exclusively), then links it into place. link() is atomic and never replaces, so
    all of them end up with whichever key landed first, never with a half-written one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_hex(32).encode())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(
            f"{path} holds no usable key ({len(key)} bytes); delete it to have a new one made "
            "(URLs signed with the old one stop working), or set the secret explicitly"
        )
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
