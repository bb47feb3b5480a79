"""Start and stop the real processes the integration tests talk to."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, args: list[str], env: dict[str, str], logdir: Path) -> Process:
    log = logdir / f"{name}.log"
    handle = log.open("ab")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return Process(name, proc, log, env)


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.process = spawn(
            f"redis-{self.port}",
            [
                binary,
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
            ],
            dict(os.environ),
            self.workdir,
        )
        client = redis.Redis(port=self.port)
        wait_for(
            lambda: bool(client.ping()), 10, "redis-server", self.process.proc, self.process.log
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
    processes: list[Process] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_worker(self, name: str, **extra_env: str) -> Process:
        env = {**self.env, "LATENTQ_WORKER_NAME": name, **extra_env}
        process = spawn(name, [PYTHON, "-m", "worker"], env, self.workdir)
        self.processes.append(process)
        return process

    def start_api(self, timeout: float = 30) -> Process:
        process, base_url = start_api(self.env, self.workdir, timeout=timeout)
        self.api_port = int(base_url.rsplit(":", 1)[1])
        self.processes.append(process)
        return process

    def wait_for_workers(self, model: str, count: int, timeout: float = 120) -> None:
        def ready() -> bool:
            models = httpx.get(f"{self.base_url}/v1/models").json()["data"]
            return any(m["id"] == model and m["workers"] >= count for m in models)

        worker = next((p for p in reversed(self.processes) if p.name != "api"), None)
        wait_for(
            ready,
            timeout,
            f"{count} worker(s) for {model}",
            worker.proc if worker else None,
            worker.log if worker else None,
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log.read_text()[-3000:]}" for p in self.processes if p.log.exists()
        )


def start_api(
    env: dict[str, str], workdir: Path, name: str = "api", timeout: float = 30
) -> tuple[Process, str]:
    """An API replica (uvicorn) on a free loopback port, once it answers; and its URL."""
    port = free_port()
    args = [
        PYTHON,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = spawn(name, args, env, workdir)
    base_url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{base_url}/healthz").status_code == 200,
        timeout,
        name,
        process.proc,
        process.log,
    )
    return process, base_url


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


ROOT = Path(__file__).resolve().parents[2]


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
