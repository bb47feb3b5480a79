"""Redis with Sentinel: the primary is killed while jobs are submitted and run.

Real processes on loopback: a primary and a replica (redis-server), three Sentinels
(redis-sentinel, quorum 2), two workers and the API configured with LATENTQ_REDIS_SENTINELS.
A client submits jobs steadily; a few seconds in, the primary gets SIGKILL. The Sentinels
promote the replica, and the API and the workers must find it by themselves. Measured: the
seconds no submit was accepted, and of the submitted jobs how many were acknowledged (202),
lost (acknowledged, then never found or never finished) and run twice — with the submit's
`WAIT 1` on (LATENTQ_REDIS_ACK_REPLICAS=1, the default with Sentinels) and off.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bench.procs import Proc, free_port, redis_binary, spawn, wait_for
from tests.integration.services import RedisServer, Service, service_env, write_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MASTER = "latentq"
DOWN_AFTER_MS = 2000
KILL_AFTER_S = 6.0
LOAD_S = 22.0
SUBMIT_EVERY_S = 0.1


@dataclass
class SentinelSet:
    """A primary, its replica and three Sentinels watching them, on loopback."""

    workdir: Path
    primary: RedisServer | None = None
    processes: list[Proc] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.primary = RedisServer(free_port(), self.workdir / "primary")
        self.primary.workdir.mkdir(parents=True)
        self.primary.start()
        replica_port = free_port()
        replica_dir = self.workdir / "replica"
        replica_dir.mkdir()
        self.processes.append(
            spawn(
                "replica",
                [
                    redis_binary("redis-server"),
                    "--port",
                    str(replica_port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(replica_dir),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--replicaof",
                    "127.0.0.1",
                    str(self.primary.port),
                ],  # fmt: skip
                {},
                replica_dir,
            )
        )
        replica = redis.Redis(port=replica_port)
        wait_for(lambda: replica.info("replication")["master_link_status"] == "up", 20, "replica")
        for index in range(3):
            port = free_port()
            folder = self.workdir / f"sentinel-{index}"
            folder.mkdir()
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                # Long enough that a busy machine does not fail the primary over by itself.
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self.processes.append(
                spawn(
                    f"sentinel-{index}", [redis_binary("redis-sentinel"), str(config)], {}, folder
                )  # fmt: skip
            )
            self.sentinel_ports.append(port)

        def watching() -> bool:
            for port in self.sentinel_ports:
                state = redis.Redis(port=port).sentinel_master(MASTER)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
                if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                    return False
            return True

        # Sentinels find the replica through the primary's INFO (every 10 s) and each other
        # through its hello channel (every 2 s).
        wait_for(watching, 40, "three sentinels that see the replica and each other")

    @property
    def spec(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def primary_port(self) -> int:
        host, port = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            MASTER
        )
        return int(port)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.primary is not None:
            self.primary.stop()


@dataclass
class Submit:
    at: float
    status: int | None
    job_id: str | None
    seconds: float = 0.0


def submit_steadily(base_url: str, until: float, out: list[Submit]) -> None:
    body = {"type": "txt2img", "prompt": "failover", "steps": 2, "width": 64, "height": 64}
    with httpx.Client(base_url=base_url, timeout=5) as api:
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                response = api.post("/v1/jobs", json=body)
                job = response.json() if response.status_code == 202 else {}
                took = time.monotonic() - sent
                out.append(Submit(sent, response.status_code, job.get("id"), took))
            except httpx.HTTPError:
                out.append(Submit(sent, None, None))
            time.sleep(max(0.0, SUBMIT_EVERY_S - (time.monotonic() - sent)))


def runs_per_job(logs: list[Path]) -> Counter[str]:
    """How often each job was started ('running' transitions in the workers' JSON logs)."""
    starts: Counter[str] = Counter()
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("status") == "running" and "job_id" in entry:
                    starts[entry["job_id"]] += 1
    return starts


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    group = SentinelSet(tmp_path / "redis")
    group.workdir.mkdir()
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.mark.parametrize("ack_replicas", ["1", "0"], ids=["wait-1", "no-wait"])
def test_primary_killed_under_load(
    sentinels: SentinelSet, tiny_model: Path, tmp_path: Path, ack_replicas: str
) -> None:
    catalog = write_catalog(tmp_path / "models.toml", tiny_model)
    env = service_env(
        "redis://127.0.0.1/0",
        tmp_path / "data",
        catalog,
        LATENTQ_REDIS_SENTINELS=sentinels.spec,
        LATENTQ_REDIS_SENTINEL_MASTER=MASTER,
        LATENTQ_REDIS_ACK_REPLICAS=ack_replicas,
        LATENTQ_BATCH_MAX="1",
        LATENTQ_LEASE_S="5",
        LATENTQ_REAP_INTERVAL_S="1",
    )
    assert sentinels.primary is not None
    service = Service(redis=sentinels.primary, workdir=tmp_path, env=env)
    try:
        workers = [service.start_worker(f"worker-{i}") for i in (1, 2)]
        # Generous: this test starts five Redis processes and three of the service's.
        service.start_api(timeout=120)
        service.wait_for_workers("tiny", 2, timeout=240)
        old_primary = sentinels.primary_port()

        submits: list[Submit] = []
        started = time.monotonic()
        client = threading.Thread(
            target=submit_steadily, args=(service.base_url, started + LOAD_S, submits)
        )
        client.start()
        time.sleep(KILL_AFTER_S)
        killed_at = time.monotonic()
        assert sentinels.primary.process is not None
        sentinels.primary.process.popen.kill()
        client.join()
        assert sentinels.primary_port() != old_primary, "the Sentinels promoted the replica"

        accepted = [s for s in submits if s.status == 202 and s.job_id]
        after = [s for s in accepted if s.at > killed_at]
        assert after, "no submit was accepted after the failover: the service did not resume"
        unavailable_s = after[0].at - killed_at

        # Every acknowledged job: found, and finished.
        outcome: dict[str, str] = {}
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=service.base_url, timeout=10) as api:
            pending = [s.job_id for s in accepted if s.job_id]
            while pending and time.monotonic() < deadline:
                still = []
                for job_id in pending:
                    response = api.get(f"/v1/jobs/{job_id}")
                    status = response.json()["status"] if response.status_code == 200 else "lost"
                    outcome[job_id] = status
                    if status in ("queued", "running"):
                        still.append(job_id)
                pending = still
                if pending:
                    time.sleep(1)
        starts = runs_per_job([w.log for w in workers])
        figures: dict[str, Any] = {
            "ack_replicas": int(ack_replicas),
            "submitted": len(submits),
            "acknowledged": len(accepted),
            "refused_or_failed": len(submits) - len(accepted),
            "unavailable_s": round(unavailable_s, 2),
            "lost": sum(1 for s in outcome.values() if s == "lost"),
            "never_finished": sum(1 for s in outcome.values() if s in ("queued", "running")),
            "succeeded": sum(1 for s in outcome.values() if s == "succeeded"),
            "run_twice": sum(1 for job_id in outcome if starts[job_id] > 1),
            "submit_p50_ms_before_kill": round(
                1000 * statistics.median(s.seconds for s in accepted if s.at < killed_at), 1
            ),
            # The new primary has no replica left: with WAIT on, each submit waits its timeout.
            "submit_p50_ms_after_failover": round(
                1000 * statistics.median(s.seconds for s in after), 1
            ),
        }
        print(f"\nsentinel failover: {json.dumps(figures)}")
        (tmp_path.parent / f"sentinel-{ack_replicas}.json").write_text(json.dumps(figures))
        refused = {s.status for s in submits if s not in accepted}
        assert refused <= {503, None}, f"submits during the failover got {refused}"
        assert unavailable_s < 30
        # Not asserted: `never_finished`. A job a worker took off its queue on the old primary
        # just before the kill can come back on the new one as queued but on no queue (the
        # pop replicated, the start did not): nothing runs it again yet. Reported, and in the
        # README as a known gap.
        if ack_replicas == "1":
            # Acknowledged only once the replica had it: none is lost with the primary.
            assert figures["lost"] == 0
            assert figures["succeeded"] == len(accepted)
        for worker in workers:
            assert worker.popen.poll() is None, f"{worker.name} died:\n{service.logs()}"
    finally:
        service.stop()
