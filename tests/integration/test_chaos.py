"""Chaos with real processes: workers killed mid-job, drained, Redis restarted.

Slow (each test starts its own Redis and workers): marked `slow`, run in CI, skippable
locally with `make test-fast`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from bench.procs import Proc, free_port, wait_for
from tests.integration.helpers import submit, wait
from tests.integration.services import RedisServer, Service, service_env, write_catalog

pytestmark = pytest.mark.slow

LONG = {"type": "txt2img", "prompt": "long", "width": 256, "height": 256, "steps": 40}


def make_service(tmp_path: Path, tiny_model: Path, **env: str) -> tuple[Service, RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    svc = Service(
        redis=server,
        workdir=tmp_path,
        env=service_env(server.url, tmp_path / "data", catalog, **env),
    )
    return svc, server


@pytest.fixture
def chaos(tmp_path: Path, tiny_model: Path) -> Iterator[Service]:
    # Short leases so that each kill is noticed in seconds; the defaults are tested below.
    svc, server = make_service(
        tmp_path,
        tiny_model,
        LATENTQ_LEASE_S="3",
        LATENTQ_REAP_INTERVAL_S="0.5",
        LATENTQ_POISON_LIMIT="3",
        LATENTQ_ADRIFT_AFTER_S="2",
    )
    try:
        svc.start_api()
        yield svc
    finally:
        svc.stop()
        server.stop()


def worker_named(svc: Service, name: str) -> Proc:
    return next(p for p in svc.processes if p.name == name and p.popen.poll() is None)


def running_on(
    api: httpx.Client,
    job_id: str,
    min_step: int = 2,
    timeout: float = 60,
    not_on: set[str] | None = None,
) -> str:
    """The worker running the job once it is a few steps in (on none of `not_on`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if (
            job["status"] == "running"
            and job["progress"]["step"] >= min_step
            and job["worker"] not in (not_on or set())
        ):
            return str(job["worker"])
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not start")


def started_at(job: dict[str, object]) -> float:
    return datetime.fromisoformat(str(job["started_at"]).replace("Z", "+00:00")).timestamp()


def test_killed_workers_lose_no_job(chaos: Service, capsys: pytest.CaptureFixture[str]) -> None:
    kills = 5
    chaos.start_worker("w0")
    chaos.start_worker("w1")
    chaos.wait_for_workers("tiny", 2)
    spare = 2
    submitted: list[str] = []
    recovery_s: list[float] = []
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        for _ in range(kills):
            job = submit(api, **LONG)
            submitted.append(job["id"])
            # Others wait behind it: none of them may be lost either.
            submitted += [
                submit(api, type="txt2img", prompt="bystander", steps=2)["id"] for _ in range(2)
            ]
            victim = running_on(api, job["id"])
            killed_at = time.time()
            os.kill(worker_named(chaos, victim).popen.pid, signal.SIGKILL)
            chaos.start_worker(f"w{spare}")  # as a supervisor would
            spare += 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                current = api.get(f"/v1/jobs/{job['id']}").json()
                if (
                    current["status"] in ("running", "succeeded")
                    and current["started_at"]
                    and started_at(current) > killed_at
                ):
                    recovery_s.append(started_at(current) - killed_at)
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"job {job['id']} was not re-run after the kill")
        ended = [wait(api, job_id, timeout=180) for job_id in submitted]
    lost = [j["id"] for j in ended if j["status"] != "succeeded"]
    rerun = [j for j in ended if j["attempts"] > 0]
    assert len(rerun) == kills
    assert lost == []
    assert all(j["result"]["images"] for j in ended)
    with capsys.disabled():
        print(
            f"\nchaos: {kills} kills, {len(submitted)} jobs submitted, {len(lost)} lost, "
            f"{len(rerun)} re-run after a kill; kill to re-run max "
            f"{max(recovery_s):.1f}s (lease 3s)"
        )


def test_a_job_that_keeps_losing_workers_fails_as_worker_lost(chaos: Service) -> None:
    for name in ("p0", "p1", "p2", "p3"):
        chaos.start_worker(name)
    chaos.wait_for_workers("tiny", 4)
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        job = submit(api, **{**LONG, "steps": 150})
        victims: set[str] = set()
        for _ in range(3):  # the poison limit of this service
            victim = running_on(api, job["id"], not_on=victims)
            os.kill(worker_named(chaos, victim).popen.pid, signal.SIGKILL)
            victims.add(victim)
        ended = wait(api, job["id"], timeout=30)
        assert ended["attempts"] == 3
        assert ended["status"] == "failed" and ended["error"]["code"] == "worker_lost"
        # The workers that are left are fine.
        assert (
            wait(api, submit(api, type="txt2img", prompt="after", steps=2)["id"])["status"]
            == "succeeded"
        )


def test_default_lease_notices_a_kill_within_30_seconds(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc, server = make_service(tmp_path, tiny_model)
    try:
        svc.start_api()
        svc.start_worker("d0")
        svc.start_worker("d1")
        svc.wait_for_workers("tiny", 2)
        with httpx.Client(base_url=svc.base_url, timeout=30) as api:
            job = submit(api, **{**LONG, "steps": 60})
            victim = running_on(api, job["id"])
            killed_at = time.time()
            os.kill(worker_named(svc, victim).popen.pid, signal.SIGKILL)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                current = api.get(f"/v1/jobs/{job['id']}").json()
                # Requeued, or already running again on the other worker.
                if current["status"] != "running" or current["worker"] != victim:
                    break
                time.sleep(0.1)
            noticed = time.time() - killed_at
            with capsys.disabled():
                print(
                    f"\nchaos: default lease (15 s, reaped every 3 s): kill noticed after "
                    f"{noticed:.1f}s"
                )
            assert noticed < 30, noticed
            assert wait(api, job["id"], timeout=120)["status"] == "succeeded"
    finally:
        svc.stop()
        server.stop()


def test_sigterm_drains_the_running_job_and_exits_0(chaos: Service) -> None:
    worker = chaos.start_worker("drain")
    chaos.wait_for_workers("tiny", 1)
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        job = submit(api, **LONG)
        queued = submit(api, type="txt2img", prompt="waiting", steps=2)
        running_on(api, job["id"])
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(60) == 0
        assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        # It took no new job: the next one waits for another worker.
        assert api.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
        chaos.start_worker("after-drain")
        assert wait(api, queued["id"])["status"] == "succeeded"


def test_sigterm_past_the_grace_gives_the_job_back(chaos: Service) -> None:
    worker = chaos.start_worker("hurried", LATENTQ_DRAIN_GRACE_S="0.5")
    chaos.wait_for_workers("tiny", 1)
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        job = submit(api, **{**LONG, "steps": 150})
        running_on(api, job["id"])
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(30) == 0
        current = api.get(f"/v1/jobs/{job['id']}").json()
        assert current["status"] == "queued" and current["queue_position"] == 1
        chaos.start_worker("takes-over")
        assert wait(api, job["id"], timeout=120)["status"] == "succeeded"


def killed_at_point(svc: Service, api: httpx.Client, point: str, job_id: str) -> float:
    """Wait for the worker that was told to kill itself at `point` to do so; when it died."""
    victim = worker_named(svc, "victim")
    assert victim.popen.wait(60) == -signal.SIGKILL, f"the worker did not die at {point}"
    died_at = time.time()
    assert f"killing this worker at {point}" in victim.log.read_text()
    return died_at


@pytest.mark.parametrize("point", ["after_pop", "give_back", "after_give_back"])
def test_a_worker_killed_at_each_point_of_a_move_loses_no_job(
    chaos: Service, point: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`after_pop`: between RQ's pop and the move to running, the job is queued on no queue.
    `give_back`, `after_give_back`: a stopping worker dies as it gives its job back."""
    stopping = point != "after_pop"
    chaos.start_worker(
        "victim",
        LATENTQ_TEST_CRASH_AT=point,
        **({"LATENTQ_DRAIN_GRACE_S": "0.5"} if stopping else {}),
    )
    chaos.wait_for_workers("tiny", 1)
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        job = submit(api, **({**LONG, "steps": 150} if stopping else LONG))
        if stopping:
            running_on(api, job["id"])
            worker_named(chaos, "victim").popen.send_signal(signal.SIGTERM)
        died_at = killed_at_point(chaos, api, point, job["id"])
        stranded = api.get(f"/v1/jobs/{job['id']}").json()
        if point == "after_pop":
            # Queued, and on no queue: only a reaper can bring it back.
            assert stranded["status"] == "queued" and stranded["queue_position"] is None
        chaos.start_worker("rescuer")  # as a supervisor would
        recovered_s = None
        while (current := api.get(f"/v1/jobs/{job['id']}").json())["status"] != "succeeded":
            if recovered_s is None and (
                current["queue_position"] is not None or current["worker"] == "rescuer"
            ):
                recovered_s = time.time() - died_at  # back on its queue, or running again
            assert current["status"] in ("queued", "running"), current
            assert time.time() - died_at < 120, current
            time.sleep(0.02)
        finished_s = time.time() - died_at
        ended = current
        assert ended["worker"] == "rescuer" and ended["result"]["images"]
        # Only a worker lost while it held the job counts as a loss.
        assert ended["attempts"] == (1 if point == "give_back" else 0)
    with capsys.disabled():
        print(
            f"\nchaos: worker killed at {point}: job {ended['status']}; back on its queue "
            f"{recovered_s:.1f}s after the kill, finished after {finished_s:.1f}s (a fresh "
            "worker started after the kill; lease 3s, adrift after 2s, reaped every 0.5s)"
        )


def test_queued_jobs_survive_a_redis_restart(chaos: Service) -> None:
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        ids = [submit(api, type="txt2img", prompt=f"durable {i}", steps=2)["id"] for i in range(10)]
        time.sleep(1.5)  # appendfsync everysec
        chaos.redis.stop()
        assert api.get("/readyz").status_code == 503
        response = api.post("/v1/jobs", json={"type": "txt2img", "prompt": "x"})
        assert response.status_code == 503
        chaos.redis.start()
        wait_for(lambda: api.get("/readyz").status_code == 200, 15, "api ready again")
        worker = chaos.start_worker("after-restart")
        chaos.wait_for_workers("tiny", 1)
        ended = [wait(api, job_id) for job_id in ids]
        assert [j["status"] for j in ended] == ["succeeded"] * 10
        # The worker rides out a second restart too.
        chaos.redis.stop()
        chaos.redis.start()
        later = wait(api, submit(api, type="txt2img", prompt="later", steps=2)["id"], 60)
        assert later["status"] == "succeeded" and worker.popen.poll() is None


def test_a_worker_recycles_itself_after_n_jobs(chaos: Service) -> None:
    # Without micro-batching: a batch of several jobs counts as one run.
    worker = chaos.start_worker("recycled", LATENTQ_RECYCLE_AFTER_JOBS="2", LATENTQ_BATCH_MAX="1")
    chaos.wait_for_workers("tiny", 1)
    with httpx.Client(base_url=chaos.base_url, timeout=30) as api:
        ids = [submit(api, type="txt2img", prompt=f"recycle {i}", steps=2)["id"] for i in range(3)]
        assert worker.popen.wait(60) == 0
        statuses = [api.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in ids]
        assert statuses == ["succeeded", "succeeded", "queued"]
        chaos.start_worker("fresh")  # as its supervisor would
        assert wait(api, ids[2])["status"] == "succeeded"
