"""`make run` under fire: its launcher (deploy/local/run.sh and the supervisor it hands over
to) started for real, with its own Redis, data folder and port, and its processes killed.

Slow (each test starts the whole stack, and a worker loads torch at every restart): marked
`slow`, run in CI, skippable locally with `make test-fast`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from bench.procs import ROOT, Proc, answers, free_port, spawn, wait_for
from tests.integration.services import service_env, write_catalog

pytestmark = pytest.mark.slow

KILLS = 10


@dataclass
class Launcher:
    """`deploy/local/run.sh` in a process group of its own, as a terminal runs it."""

    process: Proc
    var: Path
    base_url: str
    seen: set[int] = field(default_factory=set)
    """Every process the launcher started, as far as the tests looked."""

    def pid(self, name: str) -> int:
        pid = int((self.var / "run" / f"{name}.pid").read_text())
        self.seen.add(pid)
        return pid

    def text(self) -> str:
        return self.process.log.read_text(errors="replace")

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.var / "redis" / "redis.sock"))

    def children(self) -> set[int]:
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found.add(int(stat.parent.name))
        self.seen |= found
        return found

    def workers(self) -> int:
        models = httpx.get(f"{self.base_url}/v1/models", timeout=5).json()["data"]
        return int(models[0]["workers"])

    def stop(self, signum: int, timeout: float = 60) -> None:
        """Stop it as a terminal's Ctrl-C (SIGINT to the group) or a service manager
        (SIGTERM to the launcher) does, and check that nothing it started is left."""
        self.children()
        if signum == signal.SIGINT:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.popen.send_signal(signum)
        self.process.popen.wait(timeout)
        assert self.process.popen.returncode == 128 + signum, self.text()[-3000:]
        assert not alive(self.seen), f"left running: {alive(self.seen)}"
        assert "[supervise] stopped" in self.text()


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


@pytest.fixture
def launch(tmp_path: Path, tiny_model: Path) -> Iterator[Callable[..., Launcher]]:
    launched: list[Launcher] = []

    def start(
        wait_for_worker: bool = True, workers: int = 1, unset: tuple[str, ...] = (), **extra: str
    ) -> Launcher:
        catalog = write_catalog(tmp_path / "models.toml", tiny_model)
        var = tmp_path / "var"
        env = service_env("", var, catalog, **{"LATENTQ_MODELS": "tiny", **extra})
        for name in ("LATENTQ_REDIS_URL", *unset):  # run.sh starts its own Redis
            del env[name]
        env["WORKERS"] = str(workers)
        port = free_port()
        env["PORT"] = str(port)
        run_sh = [str(ROOT / "deploy" / "local" / "run.sh")]
        process = spawn("terminal", run_sh, env, tmp_path, detach=True)
        launcher = Launcher(process, var, f"http://127.0.0.1:{port}")
        launched.append(launcher)
        wait_for(answers(f"{launcher.base_url}/healthz"), 60, "the API under run.sh", process)
        if wait_for_worker:
            wait_for(lambda: launcher.workers() >= workers, 180, "the workers", process)
        return launcher

    yield start
    for launcher in launched:
        if launcher.process.alive():
            launcher.children()
            launcher.process.popen.kill()
            launcher.process.popen.wait()
        for pid in alive(launcher.seen):
            os.kill(pid, signal.SIGKILL)


class Availability:
    """Polls /healthz and /readyz every 50 ms in the background; counts what failed."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.polls = 0
        self.failures: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=2) as client:
            while not self._stop.is_set():
                for path in ("/healthz", "/readyz"):
                    self.polls += 1
                    try:
                        ok = client.get(path).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if not ok:
                        self.failures.append(time.monotonic())
                self._stop.wait(0.05)

    def __enter__(self) -> Availability:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def runs_and_successes(log: str) -> tuple[Counter[str], Counter[str]]:
    runs = Counter(re.findall(r"job (j_\S+) running", log))
    succeeded = Counter(re.findall(r"job (j_\S+) succeeded", log))
    return runs, succeeded


def test_worker_killed_mid_job_ten_times_loses_no_job(launch: Callable[..., Launcher]) -> None:
    # Lease and reap interval at their defaults: the supervisor drops a dead worker's
    # leases, so a killed job is back on its queue within a reap interval, not 15 s. A
    # generous time limit: these two cores are shared with other work.
    stack: Launcher = launch(LATENTQ_JOB_TIMEOUT_FLOOR_S="900")
    api = httpx.Client(base_url=stack.base_url, timeout=30)
    # Different step counts, so that no two jobs share a micro-batch: each kill hits one.
    bodies = [
        {"type": "txt2img", "prompt": f"job {i}", "width": 128, "height": 128, "steps": 16 + i}
        for i in range(KILLS + 4)
    ]
    ids = [api.post("/v1/jobs", json=body).json()["id"] for body in bodies]
    killed: dict[str, float] = {}
    recovered_s: list[float] = []
    with Availability(stack.base_url) as availability:
        for _ in range(KILLS):
            victim = None
            deadline = time.monotonic() + 240
            while victim is None and time.monotonic() < deadline:
                for job_id in ids:
                    if job_id in killed:
                        continue
                    job = api.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] == "running" and job["progress"]["step"] >= 1:
                        victim = job_id
                        break
                else:
                    time.sleep(0.05)
            assert victim is not None, "no job ran within 240 s\n" + stack.text()[-4000:]
            pid = stack.pid("worker")
            os.kill(pid, signal.SIGKILL)
            killed[victim] = time.monotonic()
            # The job runs again (on the restarted worker) or has ended.
            while True:
                job = api.get(f"/v1/jobs/{victim}").json()
                if job["status"] != "queued" and stack.pid("worker") != pid:
                    if job["status"] == "running" or job["status"] == "succeeded":
                        recovered_s.append(time.monotonic() - killed[victim])
                        break
                assert time.monotonic() - killed[victim] < 180, job
                time.sleep(0.05)
        finals = {}
        for job_id in ids:
            deadline = time.monotonic() + 300
            while True:
                job = api.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "canceled"):
                    finals[job_id] = job
                    break
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
    lost = [i for i, job in finals.items() if job["status"] != "succeeded"]
    log = (stack.var / "log" / "worker.log").read_text()
    runs, succeeded = runs_and_successes(log)
    twice = [i for i in ids if succeeded[i] > 1 or runs[i] > 1 + (i in killed)]
    attempts = {
        i: json.loads(stack.redis().hget(f"latentq:job:{i}", "attempts") or b"0") for i in ids
    }
    figures = {
        "kills": len(killed),
        "jobs_submitted": len(ids),
        "jobs_lost": len(lost),
        "jobs_run_twice": len(twice),
        "api_polls": availability.polls,
        "api_failed_polls": len(availability.failures),
        "seconds_from_kill_to_rerun_max": round(max(recovered_s), 1),
        "seconds_from_kill_to_rerun_median": round(sorted(recovered_s)[len(recovered_s) // 2], 1),
    }
    print("\nsupervisor chaos:", json.dumps(figures))
    assert len(killed) == KILLS
    assert not lost, {i: finals[i]["error"] for i in lost}
    assert not twice, (twice, runs, succeeded)
    # Each killed job lost its worker exactly once, and ran again exactly once.
    assert {i: a for i, a in attempts.items() if a} == {i: 1 for i in killed}
    assert availability.failures == [], f"the API failed {len(availability.failures)} polls"
    text = stack.text()
    assert text.count("worker was killed by SIGKILL") == KILLS
    assert re.search(r"j_\S+ back to the queue", text)
    # Ten kills in a few minutes are a crash loop, and are said to be one.
    assert "CRASH LOOP: worker" in text
    assert "CRASH LOOP" in (stack.var / "log" / "supervise.log").read_text()

    # Redis and the API are started again too; queued jobs survive Redis (AOF).
    os.kill(stack.pid("redis"), signal.SIGKILL)
    wait_for(lambda: api.get("/readyz").status_code == 200, 60, "redis again", stack.process)
    done = api.post("/v1/jobs", json=bodies[0], headers={"Prefer": "wait=60"})
    assert done.status_code in (200, 202), done.text
    wait_for(
        lambda: api.get(f"/v1/jobs/{done.json()['id']}").json()["status"] == "succeeded",
        120,
        "a job after redis came back",
        stack.process,
    )
    api_pid = stack.pid("api")
    os.kill(api_pid, signal.SIGKILL)
    down = time.monotonic()
    wait_for(lambda: stack.pid("api") != api_pid, 30, "the API restarted", stack.process)
    wait_for(lambda: api.get("/healthz").status_code == 200, 60, "the API again", stack.process)
    print(f"API down after its kill -9: {time.monotonic() - down:.1f}s")
    assert "api was killed by SIGKILL" in stack.text()
    assert "redis was killed by SIGKILL" in stack.text()
    api.close()
    stack.stop(signal.SIGINT)


def test_a_crash_loop_is_reported_and_the_rest_keeps_serving(
    launch: Callable[..., Launcher],
) -> None:
    # A worker that cannot start: it names a model the catalogue does not have.
    stack: Launcher = launch(wait_for_worker=False, LATENTQ_MODELS="no-such-model")
    wait_for(lambda: "CRASH LOOP: worker" in stack.text(), 90, "the crash loop", stack.process)
    text = stack.text()
    assert "worker exited 2" in text
    # The waits between starts grow while it keeps failing.
    delays = [int(d) for d in re.findall(r"worker exited 2 .*starting it again in (\d+)s", text)]
    assert delays[:3] == [1, 2, 4], delays
    assert "CRASH LOOP: worker" in (stack.var / "log" / "supervise.log").read_text()
    # The API and Redis are untouched by it.
    assert httpx.get(f"{stack.base_url}/readyz").status_code == 200
    stack.stop(signal.SIGTERM)


def test_workers_n_and_no_process_outlives_a_killed_supervisor(
    launch: Callable[..., Launcher],
) -> None:
    # WORKERS=2 on this machine's CPU: the supervisor divides the cores and gives each its
    # own metrics port.
    stack: Launcher = launch(workers=2, unset=("LATENTQ_TORCH_THREADS", "LATENTQ_METRICS_PORT"))
    children = stack.children()
    assert len(children) == 4, children  # redis, two workers, the API
    settings = []
    for name in ("worker-1", "worker-2"):
        environ = Path(f"/proc/{stack.pid(name)}/environ").read_bytes().split(b"\0")
        values = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        settings.append((values["LATENTQ_TORCH_THREADS"], values["LATENTQ_METRICS_PORT"]))
        assert (stack.var / "log" / f"{name}.log").exists()
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert [t for t, _ in settings] == [threads, threads]
    ports = {p for _, p in settings}
    assert len(ports) == 2 and "0" not in ports
    for port in ports:
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    os.kill(stack.process.pid, signal.SIGKILL)
    stack.process.popen.wait()
    deadline = time.monotonic() + 60
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(children), f"left running: {alive(children)}"
