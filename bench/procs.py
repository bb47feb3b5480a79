"""The processes a bench run starts (Redis, workers, the API, the naive server, floor
processes) and how it makes sure every one of them is gone at the end; the integration tests
start theirs with the same pieces.

Each child of a bench run is detached: it runs in its own session, so a Ctrl-C reaches the
bench alone and the bench stops its children in order (workers first, Redis last); each child
also gets SIGTERM from the kernel if the bench itself dies without cleaning up (Linux
`PR_SET_PDEATHSIG`). The tests' children stay in the terminal's session, as pytest's own.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the bench's own cleanup still runs
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    """The environment it was started with."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def spawn(
    name: str,
    args: list[str],
    env: dict[str, str],
    logdir: Path,
    *,
    pipes: bool = False,
    detach: bool = False,
) -> Proc:
    """`args` started in the repository root with exactly `env`, its output appended to
    `logdir/<name>.log`. With `pipes`, its stdin and stdout are pipes to this process (stderr
    still goes to the log); with `detach`, it runs as the module docstring says."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else handle,
            stderr=handle,
            start_new_session=detach,
            preexec_fn=_die_with_parent if detach else None,
        )
    return Proc(name, popen, log, env)


def redis_binary(name: str = "redis-server") -> str:
    """Where `name` (redis-server, redis-sentinel) is installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {name} (make test does)")
    return found


def api_command(port: int, *options: str) -> list[str]:
    """The API under uvicorn on the loopback `port`, with uvicorn's `options`."""
    return [
        PYTHON,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]


@dataclass
class Fleet:
    """Processes started with one environment and one log folder; `stop_all` stops them
    newest first. Each is listed before it is waited for, so one that never gets ready is
    stopped with the rest."""

    logdir: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    detach: bool = True

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        pipes: bool = False,
    ) -> Proc:
        """`args` with the fleet's environment updated by `env`."""
        env = {**self.env, **(env or {})}
        proc = spawn(name, args, env, self.logdir, pipes=pipes, detach=self.detach)
        self.procs.append(proc)
        return proc

    def start_redis(
        self, url: str, *options: str, name: str = "redis", timeout: float = 15
    ) -> Proc:
        """redis-server with `options`, once it answers a PING at `url`."""
        proc = self.spawn(name, [redis_binary(), *options])
        client = redis.Redis.from_url(url)
        try:
            wait_for(lambda: bool(client.ping()), timeout, "redis-server", proc)
        finally:
            client.close()
        return proc

    def start_api(
        self,
        *options: str,
        name: str = "api",
        env: dict[str, str] | None = None,
        ready: str | None = "/healthz",
        timeout: float = 30,
    ) -> tuple[Proc, str]:
        """The API on a free loopback port, with uvicorn's `options`, and its base URL; once
        `ready` answers 200 unless that is None."""
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        proc = self.spawn(name, api_command(port, *options), env)
        if ready is not None:
            wait_for(answers(f"{base_url}{ready}"), timeout, name, proc)
        return proc, base_url

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> Proc:
        """A worker, `LATENTQ_WORKER_NAME` `name` unless `env` names it otherwise. Not yet
        serving when this returns: see `workers_serving`."""
        return self.spawn(
            name, [PYTHON, "-m", "worker"], {"LATENTQ_WORKER_NAME": name, **(env or {})}
        )

    def stop(self, proc: Proc, timeout: float = 20) -> None:
        proc.stop(timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop()
            except BaseException:  # a second Ctrl-C while stopping: still kill the rest
                proc.popen.kill()
                for rest in self.procs:
                    rest.popen.kill()
                raise


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None
) -> None:
    """Poll `check` until it is true; an exception in it counts as false. Gives up when
    `proc` exits, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{what}: {proc.name} exited with {proc.popen.returncode}\n{proc.tail()}"
            )
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = proc.tail() if proc is not None else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s\n{tail}")


def answers(url: str) -> Callable[[], bool]:
    """A check for `wait_for`: `url` answers 200."""
    return lambda: httpx.get(url).status_code == 200


def workers_serving(base_url: str, model: str) -> int:
    """How many workers the API at `base_url` counts for `model`."""
    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    return int(next((m["workers"] for m in models if m["id"] == model), 0))


def read_line(stream: IO[bytes] | None, proc: Proc, what: str) -> str:
    if stream is None:
        raise RuntimeError(f"{proc.name} has no output pipe")
    line = stream.readline()
    if not line:
        proc.popen.wait()
        raise RuntimeError(
            f"{what}: {proc.name} exited with {proc.popen.returncode}\n{proc.tail()}"
        )
    return line.decode().strip()


# -- what a process uses (Linux /proc) -------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used, or None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_mb(pid: int) -> dict[str, float] | None:
    """Resident memory now (`rss`) and at its peak (`hwm`), in MiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found: dict[str, float] = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found["rss" if name == "VmRSS" else "hwm"] = round(int(value.split()[0]) / 1024, 1)
    return found or None


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine() -> dict[str, Any]:
    """The host as far as the bench can tell without torch."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "host": socket.gethostname(),
        "cpu_model": model,
        "cores": len(affinity(0)) if affinity else os.cpu_count(),
        "memory_gib": memory,
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
