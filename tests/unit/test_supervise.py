"""`make run`'s supervisor: where workers go, and how long a crashed process waits."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.deploy.helpers import load_supervise

ROOT = Path(__file__).resolve().parents[2]


supervise = load_supervise()


def test_one_worker_per_cuda_device() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "2,3", "LATENTQ_METRICS_PORT": "9200"}
    envs, placed = supervise.worker_envs(env, 2, cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3"]
    assert [e["LATENTQ_METRICS_PORT"] for e in envs] == ["9200", "9201"]
    assert all("LATENTQ_TORCH_THREADS" not in e for e in envs)
    assert "2 CUDA device(s)" in placed
    # More workers than devices: they take turns, and the line says so.
    envs, placed = supervise.worker_envs({**env, "LATENTQ_DEVICE": "cuda:1"}, 3, cores=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3", "2"]
    assert {e["LATENTQ_DEVICE"] for e in envs} == {"cuda"}
    assert "1 share a device" in placed


def test_cuda_visible_devices_is_read_as_cuda_does() -> None:
    assert supervise.cuda_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert supervise.cuda_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert supervise.cuda_devices({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == ["0"]
    assert supervise.cuda_devices({"CUDA_VISIBLE_DEVICES": "0", "LATENTQ_DEVICE": "cpu"}) == []


def test_cpu_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise.shutil, "which", lambda name: None)  # no nvidia-smi
    envs, placed = supervise.worker_envs({"LATENTQ_METRICS_PORT": "0"}, 3, cores=8)
    assert [e["LATENTQ_TORCH_THREADS"] for e in envs] == ["2", "2", "2"]
    assert [e["LATENTQ_METRICS_PORT"] for e in envs] == ["0", "0", "0"]
    assert "2 torch threads each" in placed
    # One worker keeps torch's default; a setting given is kept.
    envs, _ = supervise.worker_envs({"LATENTQ_METRICS_PORT": "0"}, 1, cores=8)
    assert "LATENTQ_TORCH_THREADS" not in envs[0]
    envs, _ = supervise.worker_envs({"LATENTQ_TORCH_THREADS": "3"}, 2, cores=8)
    assert [e["LATENTQ_TORCH_THREADS"] for e in envs] == ["3", "3"]
    assert len({e["LATENTQ_METRICS_PORT"] for e in envs}) == 2  # a port each


def test_restart_delays() -> None:
    program = supervise.Program("worker", ["python", "-m", "worker"], {})
    quick = [supervise.restart_delay(program, 1, uptime=2) for _ in range(9)]
    assert quick == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    # A crash after a long run starts the count again; a clean exit after one (a worker
    # recycling itself) is restarted at once.
    assert supervise.restart_delay(program, -signal.SIGKILL, uptime=300) == 1
    assert supervise.restart_delay(program, 0, uptime=300) == 0
    assert supervise.restart_delay(program, 0, uptime=1) == 1


def test_each_start_of_a_named_worker_gets_a_fresh_name() -> None:
    program = supervise.Program("worker", ["python"], {}, worker_name="gpu0", worker=True)
    program.starts = 1
    assert program.proc_env()["LATENTQ_WORKER_NAME"] == "gpu0"
    program.starts = 2
    assert program.proc_env()["LATENTQ_WORKER_NAME"] == "gpu0.2"


def test_exits_are_described() -> None:
    assert supervise.describe(-signal.SIGKILL) == "was killed by SIGKILL"
    assert supervise.describe(70) == "exited 70 (its device failed)"
    assert supervise.describe(2) == "exited 2"
