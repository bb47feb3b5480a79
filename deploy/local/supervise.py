"""`make run`'s supervisor: a private Redis, the workers and the API, each started again
when it dies, until Ctrl-C or SIGTERM stops them all.

`deploy/local/run.sh` sets the environment up and hands over to this module. It starts
Redis (unless `LATENTQ_REDIS_URL` names one), waits until Redis answers, then starts
`--workers` workers and the API. Each process's output goes to `var/log/<name>.log` and to
the terminal, its lines prefixed with its name; its pid is in `var/run/<name>.pid`. What the
supervisor itself does (starts, exits, restarts, crash loops) goes to
`var/log/supervise.log` and to the terminal too.

A process that exits without having been asked to is started again: at once after a clean
exit that followed a run of a while (a worker recycling itself, `LATENTQ_RECYCLE_AFTER_JOBS`);
`BASE_DELAY_S` after a crash (any other exit: a non-zero status, such as 70 for a worker
whose GPU failed, or a signal); and, while it keeps dying within `STABLE_S` of its start,
twice as long each time, up to `MAX_DELAY_S`. `LOOP_CRASHES` crashes within
`LOOP_WINDOW_S` are reported as a crash loop, again at every further crash. When a worker
crashes, the leases of the jobs it was running are dropped at once (`jobs.leases`), so the
reapers put those jobs back at the front of their queues within a reap interval instead of
a lease's length.

Ctrl-C (SIGINT, to the whole foreground process group) or SIGTERM stops the API and the
workers with SIGTERM — a worker finishes its running job first, within
`LATENTQ_DRAIN_GRACE_S` — and then Redis, so that a worker can still give its job back. A
second Ctrl-C stops the workers at once (the reaper re-runs their jobs after the next start)
and kills whatever is left `KILL_AFTER_S` later; a third kills it now. The children run in a
process group of their own, so that the terminal's Ctrl-C reaches this process alone and
the order holds, and the kernel stops each of them should this process die without doing it
(PR_SET_PDEATHSIG): none outlives it.

Why not an existing supervisor: honcho (foreman) stops every process as soon as one exits,
which is what this replaces; supervisord restarts, but gives a program up for good after a
few quick failed starts and wants a config file and a daemon of its own; neither knows to
drop a dead worker's leases.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

BASE_DELAY_S = 1.0
"""Wait before starting a crashed process again."""

MAX_DELAY_S = 60.0
"""Longest wait between two starts of a process that keeps crashing."""

STABLE_S = 10.0
"""A process that ran this long before it died is restarted after `BASE_DELAY_S`; one that
died sooner waits twice as long as the last time."""

LOOP_CRASHES = 3
LOOP_WINDOW_S = 60.0
"""This many crashes of one process within this many seconds are a crash loop."""

KILL_AFTER_S = 10.0
"""After a second Ctrl-C, how long the processes still get before they are killed."""

EXIT_DEVICE_BROKEN = 70
"""A worker's exit status when its GPU failed beyond repair (worker.main)."""

_PR_SET_PDEATHSIG = 1


@dataclass
class Program:
    """One process to keep running."""

    name: str
    argv: list[str]
    env: dict[str, str]
    worker_name: str | None = None
    """A latentq worker's name (`LATENTQ_WORKER_NAME`); each start gets a fresh one, as RQ
    refuses a name whose last holder was killed. None: not a worker, or named host.pid."""
    ready: Callable[[], bool] | None = None
    """For a program the others need (Redis): true once it serves."""
    worker: bool = False
    """A latentq worker: when it crashes, the leases it held are dropped."""

    proc: subprocess.Popen[bytes] | None = None
    running: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    starts: int = 0
    streak: int = 0
    """Consecutive exits within `STABLE_S` of a start."""
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    partial: bytes = b""

    def current_worker_name(self) -> str | None:
        if not self.worker or self.proc is None:
            return None
        # worker.main names itself host.pid unless LATENTQ_WORKER_NAME says otherwise.
        return self.proc_env().get("LATENTQ_WORKER_NAME") or (
            f"{socket.gethostname()}.{self.proc.pid}"
        )

    def proc_env(self) -> dict[str, str]:
        if self.worker_name is None:
            return self.env
        name = self.worker_name if self.starts <= 1 else f"{self.worker_name}.{self.starts}"
        return {**self.env, "LATENTQ_WORKER_NAME": name}


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    if returncode == EXIT_DEVICE_BROKEN:
        return f"exited {returncode} (its device failed)"
    return f"exited {returncode}"


def restart_delay(program: Program, returncode: int, uptime: float) -> float:
    """Seconds to wait before starting `program` again (and its streak counted)."""
    quick = uptime < STABLE_S
    program.streak = program.streak + 1 if quick else 0
    if returncode == 0 and not quick:
        return 0.0
    return min(MAX_DELAY_S, BASE_DELAY_S * 2.0 ** max(0, program.streak - 1))


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Run in each child before it execs: SIGTERM to it when the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)

    return setup


class Supervisor:
    def __init__(
        self,
        programs: list[Program],
        var: Path,
        *,
        out: TextIO = sys.stdout,
        redis_url: str | None = None,
        banner: list[str] | None = None,
    ) -> None:
        self.programs = programs
        self.logs = var / "log"
        self.pids = var / "run"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.journal = (self.logs / "supervise.log").open("a", encoding="utf-8", buffering=1)
        self.redis_url = redis_url
        self.banner = banner or []
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.stop_signal = 0
        self.kill_at: float | None = None
        self.terminated: set[int] = set()

    @property
    def stopping(self) -> bool:
        return self.stop_signal != 0

    def say(self, message: str) -> None:
        self.journal.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self._show(f"[supervise] {message}\n")

    def _show(self, text: str) -> None:
        # A closed terminal must not stop the supervisor half way: the logs still get it all.
        try:
            self.out.write(text)
            self.out.flush()
        except OSError:
            pass

    def log_of(self, program: Program) -> Path:
        return self.logs / f"{program.name}.log"

    # -- output ------------------------------------------------------------------------------

    def _pump(self, program: Program) -> None:
        """Copy what the program wrote to its log and to the terminal, whole lines only
        until it closes its output."""
        assert program.proc is not None and program.proc.stdout is not None
        stream = program.proc.stdout
        chunks, eof = [], False
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        *lines, program.partial = (program.partial + b"".join(chunks)).split(b"\n")
        if eof and program.partial:
            lines.append(program.partial)
            program.partial = b""
        if lines:
            with self.log_of(program).open("ab") as log:
                log.write(b"".join(line + b"\n" for line in lines))
            prefix = f"[{program.name}] "
            self._show("".join(prefix + line.decode("utf-8", "replace") + "\n" for line in lines))
        if eof:
            self.selector.unregister(stream)
            stream.close()

    # -- processes ---------------------------------------------------------------------------

    def _start(self, program: Program) -> None:
        program.starts += 1
        program.proc = subprocess.Popen(
            program.argv,
            env=program.proc_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        assert program.proc.stdout is not None
        os.set_blocking(program.proc.stdout.fileno(), False)
        self.selector.register(program.proc.stdout, selectors.EVENT_READ, program)
        program.running = True
        program.started_at = time.monotonic()
        program.restart_at = None
        # Written whole or not at all: a reader never sees an empty or half-written file.
        pidfile = self.pids / f"{program.name}.pid"
        partial = pidfile.with_suffix(".pid.partial")
        partial.write_text(f"{program.proc.pid}\n")
        os.replace(partial, pidfile)
        again = " again" if program.starts > 1 else ""
        self.say(f"{program.name} started{again} (pid {program.proc.pid})")

    def _reap(self) -> None:
        for program in self.programs:
            if not program.running:
                continue
            assert program.proc is not None
            returncode = program.proc.poll()
            if returncode is None:
                continue
            program.running = False
            if program.proc.stdout is not None and not program.proc.stdout.closed:
                self._pump(program)
            self._exited(program, returncode)

    def _exited(self, program: Program, returncode: int) -> None:
        what = describe(returncode)
        if self.stopping:
            asked = returncode in (0, -signal.SIGTERM, -signal.SIGINT)
            self.say(f"{program.name} stopped" + ("" if asked else f" ({what})"))
            return
        now = time.monotonic()
        uptime = now - program.started_at
        delay = restart_delay(program, returncode, uptime)
        if delay:
            program.crashes.append(now)
        while program.crashes and program.crashes[0] < now - LOOP_WINDOW_S:
            program.crashes.popleft()
        released = self._release(program) if returncode != 0 else ""
        self.say(
            f"{program.name} {what} after {uptime:.1f}s{released}; starting it again"
            + (f" in {delay:.0f}s" if delay else "")
        )
        if len(program.crashes) >= LOOP_CRASHES:
            message = (
                f"CRASH LOOP: {program.name} crashed {len(program.crashes)} times in the last "
                f"{LOOP_WINDOW_S:.0f}s (last: {what}); see {self.log_of(program)}"
            )
            self.say(message)
        program.restart_at = now + delay

    def _release(self, program: Program) -> str:
        """Drop a crashed worker's leases and presence; a note of what was done."""
        name = program.current_worker_name()
        if name is None or self.redis_url is None:
            return ""
        try:
            import redis

            from jobs.leases import release_leases
            from jobs.queueing import retire_worker

            connection = redis.Redis.from_url(
                self.redis_url, socket_connect_timeout=2, socket_timeout=2
            )
            try:
                jobs = release_leases(connection, name)
                retire_worker(connection, name)
            finally:
                connection.close()
        except Exception as exc:  # Redis is away too: the leases run out by themselves
            return f" (its leases stay until they run out: {exc})"
        if not jobs:
            return ""
        return f"; {', '.join(jobs)} back to the queue"

    def _alive(self, programs: list[Program]) -> list[Program]:
        return [p for p in programs if p.running]

    def _signal(self, programs: list[Program], signum: int) -> None:
        for program in self._alive(programs):
            assert program.proc is not None
            try:
                os.kill(program.proc.pid, signum)
            except ProcessLookupError:
                pass

    # -- stopping ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:  # SIGCHLD only wakes the loop up
            self.signals.append(signum)

    def _handle_signals(self) -> None:
        front = [p for p in self.programs if p.ready is None]
        while self.signals:
            signum = self.signals.pop(0)
            if not self.stopping:
                self.stop_signal = signum
                self.say(
                    "stopping: a worker finishes its running job first (Ctrl-C again to "
                    "stop at once)"
                )
                for program in self.programs:
                    program.restart_at = None
                self._signal(front, signal.SIGTERM)
            elif self.kill_at is None:
                self.say(f"stopping at once (what is left is killed in {KILL_AFTER_S:.0f}s)")
                self.kill_at = time.monotonic() + KILL_AFTER_S
                self._signal(front, signal.SIGTERM)
            else:
                self.kill_at = time.monotonic()

    def _stopped(self) -> bool:
        """One step of stopping: what the others need (Redis) goes last. True once every
        process has exited."""
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self._signal(self.programs, signal.SIGKILL)
        if self._alive([p for p in self.programs if p.ready is None]):
            return False
        back = self._alive([p for p in self.programs if p.ready is not None])
        for program in back:
            assert program.proc is not None
            if program.proc.pid not in self.terminated:
                self.terminated.add(program.proc.pid)
                self._signal([program], signal.SIGTERM)
        return not back

    # -- the loop ----------------------------------------------------------------------------

    def _start_next(self, pending: list[Program]) -> None:
        """Start the programs in order; one that others need must be ready first."""
        while pending:
            program = pending[0]
            if program.proc is None:
                self._start(program)
            if program.ready is not None:
                try:
                    ready = program.running and program.ready()
                except Exception:
                    ready = False
                if not ready:
                    return
                self.say(f"{program.name} is ready")
            pending.pop(0)
            if not pending:
                for line in self.banner:
                    self.say(line)

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        pending = list(self.programs)
        try:
            while True:
                if not self.stopping:
                    self._start_next(pending)
                    now = time.monotonic()
                    for program in self.programs:
                        if program.restart_at is not None and program.restart_at <= now:
                            self._start(program)
                timeout = 0.1 if pending or self.stopping else 1.0
                due = [p.restart_at for p in self.programs if p.restart_at is not None]
                if due:
                    timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
                for key, _ in self.selector.select(timeout):
                    if key.data is None:
                        try:
                            while os.read(wake_r, 512):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self._pump(key.data)
                self._reap()
                self._handle_signals()
                if self.stopping and self._stopped():
                    break
        finally:
            signal.set_wakeup_fd(-1)
            for program in self.programs:
                if program.running:  # only when this loop itself failed
                    self._signal([program], signal.SIGKILL)
        self.say("stopped")
        return 128 + self.stop_signal


# -- what `make run` runs ----------------------------------------------------------------------


def cuda_devices(env: dict[str, str]) -> list[str]:
    """The CUDA devices this machine shows (`CUDA_VISIBLE_DEVICES` when set, else
    `nvidia-smi -L`); none on a machine without NVIDIA's driver."""
    if env.get("LATENTQ_DEVICE", "auto") == "cpu":
        return []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = []
        for device in (d.strip() for d in visible.split(",")):
            if not device or device.startswith("-"):
                break  # CUDA stops reading the list at the first invalid entry
            devices.append(device)
        return devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(gpus))] if listing.returncode == 0 else []


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens on it, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def worker_envs(env: dict[str, str], count: int, cores: int) -> tuple[list[dict[str, str]], str]:
    """Each worker's environment — its GPU (one each, round robin when there are fewer
    GPUs than workers) or its share of the CPU cores, and its metrics port — and a line
    saying how they were placed."""
    devices = cuda_devices(env)
    envs: list[dict[str, str]] = [dict(env) for _ in range(count)]
    if devices:
        for i, worker in enumerate(envs):
            worker["CUDA_VISIBLE_DEVICES"] = devices[i % len(devices)]
            if worker.get("LATENTQ_DEVICE", "auto").startswith("cuda:"):
                worker["LATENTQ_DEVICE"] = "cuda"  # the one device it sees
        placed = f"{count} worker(s) on {len(devices)} CUDA device(s)"
        if count > len(devices):
            placed += f": {count - len(devices)} share a device with another worker"
    else:
        threads = env.get("LATENTQ_TORCH_THREADS")
        if threads is None and count > 1:
            # torch's default, every core in every process, oversubscribes the cores: with W
            # workers on C cores each gets C/W (README, "Performance").
            threads = str(max(1, cores // count))
            for worker in envs:
                worker["LATENTQ_TORCH_THREADS"] = threads
        placed = f"{count} worker(s) on the CPU ({cores} cores"
        placed += f", {threads} torch threads each)" if threads else ")"
    base = env.get("LATENTQ_METRICS_PORT")
    for i, worker in enumerate(envs):
        if base is None:
            worker["LATENTQ_METRICS_PORT"] = str(free_port(9100 + i))
        elif base != "0":
            worker["LATENTQ_METRICS_PORT"] = str(int(base) + i)
    return envs, placed


def _masked(url: str) -> str:
    """The URL without its password: the banner stays on screens and in scrollback."""
    return re.sub(r"(://[^:/@]*:)[^/@]*@", r"\1***@", url)


def programs(
    root: Path, var: Path, host: str, port: int, workers: int, env: dict[str, str]
) -> tuple[list[Program], str, list[str]]:
    """What `make run` keeps running, the Redis URL they share, and the banner."""
    python = sys.executable
    env = {**env, "PYTHONUNBUFFERED": "1"}
    result: list[Program] = []
    redis_url = env.get("LATENTQ_REDIS_URL")
    if not redis_url:
        socket_path = var / "redis" / "redis.sock"
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        redis_url = f"unix://{socket_path}"

        def redis_ready() -> bool:
            import redis

            client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()

        argv = [
            shutil.which("redis-server") or "redis-server",
            str(root / "deploy" / "local" / "redis.conf"),
            "--dir",
            str(var / "redis"),
            "--unixsocket",
            str(socket_path),
        ]
        result.append(Program("redis", argv, env, ready=redis_ready))
    env = {**env, "LATENTQ_REDIS_URL": redis_url}
    cores = len(os.sched_getaffinity(0))
    envs, placed = worker_envs(env, workers, cores)
    given_name = env.get("LATENTQ_WORKER_NAME")
    for i, worker_env in enumerate(envs, start=1):
        name = "worker" if workers == 1 else f"worker-{i}"
        worker_name = None
        if given_name:
            worker_name = given_name if workers == 1 else f"{given_name}-{i}"
        argv = [python, "-m", "worker"]
        result.append(Program(name, argv, worker_env, worker_name=worker_name, worker=True))
    api = [
        python,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        host,
        "--port",
        str(port),
        # No proxy in front: no --proxy-headers, so no client can name its own address.
        "--timeout-graceful-shutdown",
        "20",
    ]
    result.append(Program("api", api, env))
    metrics = ", ".join(
        f"http://127.0.0.1:{e['LATENTQ_METRICS_PORT']}/metrics"
        for e in envs
        if e.get("LATENTQ_METRICS_PORT", "0") != "0"
    )
    names = ",".join(p.name for p in result)
    banner = [
        f"latentq: http://{host}:{port}   (API docs: /docs, models: /v1/models)",
        placed + (f"; metrics: {metrics}" if metrics else ""),
        f"logs: {var}/log/{{{names},supervise}}.log   pids: {var}/run/",
        f"redis: {_masked(redis_url)}",
        "Ctrl-C stops everything; a crashed process is started again",
    ]
    return result, redis_url, banner


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="supervise.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--var", type=Path, required=True, help="the data folder (var/)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers (WORKERS) must be at least 1")
    root = Path(__file__).resolve().parents[2]
    var = args.var.resolve()
    progs, redis_url, banner = programs(
        root, var, args.host, args.port, args.workers, dict(os.environ)
    )
    supervisor = Supervisor(progs, var, redis_url=redis_url, banner=banner)
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
