"""Start and stop the real processes the integration tests talk to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.procs import ROOT, Fleet, Proc, free_port, wait_for, workers_serving

QUIET = ("--log-level", "warning")
"""uvicorn's options for the tests' API: warnings and errors only, no access log."""


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        fleet = Fleet(self.workdir, dict(os.environ), detach=False)
        self.process = fleet.start_redis(
            self.url,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            name=f"redis-{self.port}",
            timeout=10,
        )

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@dataclass
class Service:
    """Redis, N workers and the API, configured by one environment."""

    redis: RedisServer
    workdir: Path
    env: dict[str, str]
    api_port: int = 0
    processes: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def fleet(self) -> Fleet:
        """Starts processes into `processes`, with the service's environment."""
        return Fleet(self.workdir, self.env, self.processes, detach=False)

    def start_worker(self, name: str, **extra_env: str) -> Proc:
        return self.fleet.start_worker(name, extra_env)

    def start_api(self, timeout: float = 30) -> Proc:
        process, base_url = self.fleet.start_api(*QUIET, timeout=timeout)
        self.api_port = int(base_url.rsplit(":", 1)[1])
        return process

    def wait_for_workers(self, model: str, count: int, timeout: float = 120) -> None:
        worker = next((p for p in reversed(self.processes) if p.name != "api"), None)
        wait_for(
            lambda: workers_serving(self.base_url, model) >= count,
            timeout,
            f"{count} worker(s) for {model}",
            worker,
        )

    def stop(self) -> None:
        self.fleet.stop_all()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.processes if p.log.exists())


def start_api(
    env: dict[str, str], workdir: Path, name: str = "api", timeout: float = 30
) -> tuple[Proc, str]:
    """An API replica (uvicorn) on a free loopback port, once it answers; and its URL."""
    return Fleet(workdir, env, detach=False).start_api(*QUIET, name=name, timeout=timeout)


def write_catalog(path: Path, model_dir: Path) -> Path:
    path.write_text(f"""
default = "tiny"

[[models]]
id = "tiny"
source = "{model_dir}"
family = "sd1"
tasks = ["txt2img", "img2img", "inpaint", "outpaint"]
native_size = [64, 64]
default_steps = 4
schedulers = ["euler", "euler_a", "ddim", "dpmpp_2m", "unipc", "pndm"]

[[models]]
id = "txt-only"
source = "{model_dir}"
family = "sd1"
tasks = ["txt2img"]
native_size = [64, 64]
default_steps = 2
schedulers = ["euler"]
""")
    return path


def service_env(redis_url: str, data_dir: Path, catalog: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTQ_")}
    env.update(
        {
            "LATENTQ_REDIS_URL": redis_url,
            "LATENTQ_DATA_DIR": str(data_dir),
            "LATENTQ_CATALOG": str(catalog),
            "LATENTQ_TORCH_THREADS": "1",
            "LATENTQ_METRICS_PORT": "0",
            # The suite submits hundreds of jobs a minute; the limit itself is tested with keys.
            "LATENTQ_RATE_LIMIT_PER_MIN": "0",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@contextmanager
def own_service(
    workdir: Path,
    catalog: Path,
    worker: str,
    model: str,
    *,
    ready_timeout: float = 120,
    **worker_env: str,
) -> Iterator[Service]:
    """A Redis, one worker and the API of a test's own, serving `catalog` with the extra
    `LATENTQ_*` settings given; yielded once the worker holds `model`. Everything stops after."""
    server = RedisServer(free_port(), workdir / "redis")
    server.workdir.mkdir()
    server.start()
    svc = Service(
        redis=server,
        workdir=workdir,
        env=service_env(server.url, workdir / "data", catalog, **worker_env),
    )
    try:
        svc.start_worker(worker)
        svc.start_api()
        svc.wait_for_workers(model, 1, timeout=ready_timeout)
        yield svc
    finally:
        svc.stop()
        server.stop()


@contextmanager
def shapes_service(workdir: Path, **worker_env: str) -> Iterator[Service]:
    """The shipped catalogue (models.toml) served as `make run` serves it, its worker holding
    the trained `shapes` model and its `outline` adapter only."""
    with own_service(
        workdir,
        ROOT / "models.toml",
        "shapes-worker",
        "shapes",
        LATENTQ_MODELS="shapes",
        **worker_env,
    ) as svc:
        yield svc
