"""docker-compose.yml and its CPU override: Docker Compose v2 accepts them, and they say
what the deployment needs (AOF Redis, two API replicas behind nginx, a GPU worker...)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import ROOT, compose_binary, job_timeout_default, run

BASE = ["-f", "docker-compose.yml"]
CPU = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]
SENTINEL = ["-f", "docker-compose.yml", "-f", "docker-compose.sentinel.yml"]


REQUIRED = {
    "MINIO_ROOT_PASSWORD": "root-secret-for-the-compose-checks",
    "MINIO_LATENTQ_PASSWORD": "service-secret-for-the-compose-checks",
}
"""The secrets docker-compose.yml refuses to start without, as a user's .env sets them."""


def compose_env(**overrides: str) -> dict[str, str]:
    """The environment without any variable the compose files interpolate, so that the
    checks see the files' own defaults whatever the shell exports; the required secrets
    are set (`overrides` may drop one with an empty value)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LATENTQ_", "COMPOSE_", "MINIO_", "GRAFANA_"))
    }
    env["HOME"] = env.get("HOME", "/tmp")
    env.update(REQUIRED)
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


@cache
def config(files: tuple[str, ...]) -> dict[str, Any]:
    result = run([compose_binary(), *files, "config", "--format", "json"], env=compose_env())
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def duration_s(value: str) -> float:
    """A Go duration as compose prints it (31m0s, 1h0m0s, 90s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts, value
    return sum(float(n) * units[u] for n, u in parts)


def depends(service: dict[str, Any], on: str, condition: str) -> bool:
    return bool(service.get("depends_on", {}).get(on, {}).get("condition") == condition)


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


@pytest.mark.parametrize("files", [BASE, CPU, SENTINEL], ids=["gpu", "cpu", "sentinel"])
def test_compose_accepts_the_files(files: list[str]) -> None:
    result = run([compose_binary(), *files, "config", "--quiet"], env=compose_env())
    assert result.returncode == 0, result.stderr


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The bundled binary does fail on errors (its Python wrapper would exit 0)."""
    broken = tmp_path / "compose.yml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n"
        "      missing:\n        condition: service_healthy\n"
    )
    result = run([compose_binary(), "-f", str(broken), "config", "--quiet"], env=compose_env())
    assert result.returncode != 0


def test_services() -> None:
    services = config(tuple(BASE))["services"]
    assert {
        "redis",
        "api",
        "worker",
        "nginx",
        "minio",
        "minio-init",
        "prometheus",
        "grafana",
    } <= set(services)


def test_redis_is_durable_and_healthchecked() -> None:
    redis = config(tuple(BASE))["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert mounts(redis)["/data"]["type"] == "volume"
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_api_replicas_behind_nginx() -> None:
    services = config(tuple(BASE))["services"]
    api = services["api"]
    assert api["deploy"]["replicas"] >= 2
    assert api["build"]["target"] == "api"
    env = api["environment"]
    assert env["LATENTQ_PUBLIC_URL"].startswith("http")
    assert env["LATENTQ_REDIS_URL"].startswith("redis://redis:")
    assert env["FORWARDED_ALLOW_IPS"]
    assert depends(api, "redis", "service_healthy")
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    nginx = services["nginx"]
    assert depends(nginx, "api", "service_healthy")
    conf = mounts(nginx)["/etc/nginx/nginx.conf"]
    assert conf["type"] == "bind"
    assert Path(conf["source"]) == ROOT / "deploy" / "nginx" / "nginx.conf"
    assert nginx["ports"], "nginx is the published entry point"
    assert "ports" not in api, "the API is reached through nginx only"


def test_worker_has_a_gpu_and_its_volumes() -> None:
    services = config(tuple(BASE))["services"]
    worker = services["worker"]
    assert worker["build"]["target"] == "worker"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    env = worker["environment"]
    assert env["LATENTQ_DEVICE"].startswith("cuda")
    assert env["LATENTQ_METRICS_PORT"] == "9100"
    # Prometheus scrapes worker:9100 from another container (deploy/prometheus).
    assert env["LATENTQ_METRICS_HOST"] == "0.0.0.0"
    assert depends(worker, "redis", "service_healthy")
    volumes = mounts(worker)
    assert volumes["/models"]["type"] == "volume"
    assert volumes[env["HF_HOME"]]["type"] == "volume"
    # API and workers share images and the catalogue.
    api_volumes = mounts(services["api"])
    assert volumes["/data"]["source"] == api_volumes["/data"]["source"]
    catalog = env["LATENTQ_CATALOG"]
    assert volumes[catalog]["source"] == api_volumes[catalog]["source"]
    assert "9100/readyz" in " ".join(worker["healthcheck"]["test"])
    timeout = int(env.get("LATENTQ_JOB_TIMEOUT_S", job_timeout_default()))
    assert duration_s(worker["stop_grace_period"]) > timeout


def test_storage_and_monitoring() -> None:
    services = config(tuple(BASE))["services"]
    init = services["minio-init"]
    assert depends(init, "minio", "service_healthy")
    script = mounts(init)[init["entrypoint"][-1]]["source"]
    assert "mc mb" in Path(script).read_text()
    for name in ("api", "worker"):
        assert depends(services[name], "minio-init", "service_completed_successfully")
        env = services[name]["environment"]
        for key in ("LATENTQ_S3_BUCKET", "LATENTQ_S3_ENDPOINT_URL", "LATENTQ_S3_REGION"):
            assert env[key]
        assert env["AWS_ACCESS_KEY_ID"] == init["environment"]["MINIO_LATENTQ_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == init["environment"]["MINIO_LATENTQ_PASSWORD"]
    prometheus = mounts(services["prometheus"])
    assert Path(prometheus["/etc/prometheus"]["source"]) == ROOT / "deploy" / "prometheus"
    grafana = mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning"]["source"]) == (
        ROOT / "deploy" / "grafana" / "provisioning"
    )
    assert depends(services["grafana"], "prometheus", "service_healthy")


def test_every_bind_mount_exists() -> None:
    for name, service in config(tuple(BASE))["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


def test_cpu_override_drops_the_gpu() -> None:
    worker = config(tuple(CPU))["services"]["worker"]
    reservations = worker.get("deploy", {}).get("resources", {}).get("reservations", {})
    assert not reservations.get("devices"), "no GPU reservation on the CPU worker"
    assert worker["environment"]["LATENTQ_DEVICE"] == "cpu"
    # Everything else is still there.
    assert {"redis", "api", "nginx"} <= set(config(tuple(CPU))["services"])


# ---- MinIO: a required root secret, a bucket-scoped user, no published S3 port ---------------


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_run_without_the_minio_secrets(missing: str) -> None:
    result = run([compose_binary(), *BASE, "config", "--quiet"], env=compose_env(**{missing: ""}))
    assert result.returncode != 0, f"compose ran without {missing}"
    assert missing in result.stderr


def test_the_api_and_worker_are_not_minio_root() -> None:
    services = config(tuple(BASE))["services"]
    root = services["minio"]["environment"]
    assert root["MINIO_ROOT_PASSWORD"] == REQUIRED["MINIO_ROOT_PASSWORD"]
    for name, service in services.items():
        env = service.get("environment") or {}
        if name not in ("minio", "minio-init"):
            assert "MINIO_ROOT_PASSWORD" not in env, name
            assert REQUIRED["MINIO_ROOT_PASSWORD"] not in env.values(), name
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] != root["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == REQUIRED["MINIO_LATENTQ_PASSWORD"]


def test_the_s3_port_is_not_published() -> None:
    minio = config(tuple(BASE))["services"]["minio"]
    for port in minio.get("ports", []):
        assert int(port["target"]) != 9000, "the S3 API is reached through nginx, not published"
        assert port.get("host_ip") == "127.0.0.1", f"{port} is published beyond loopback"
    # Result URLs are presigned for the address clients reach nginx at.
    env = config(tuple(BASE))["services"]["api"]["environment"]
    assert env["LATENTQ_S3_PUBLIC_ENDPOINT_URL"] == env["LATENTQ_PUBLIC_URL"]


def minio_init(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run minio-init's script as the compose service runs it, with `mc` recording what it
    is asked to do (no MinIO server is installable here): the result and the calls. Nothing
    but `mc` is on the PATH: the mc image has little else, so the script uses builtins."""
    init = config(tuple(BASE))["services"]["minio-init"]
    script = mounts(init)[init["entrypoint"][-1]]["source"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    mc = bin_dir / "mc"
    mc.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        # Keep the policy document that `mc admin policy create ALIAS NAME FILE` gets.
        f'[ "$1 $2 $3" = "admin policy create" ] &&\n'
        f'  while IFS= read -r l; do echo "$l"; done < "$6" > {tmp_path}/policy.json\n'
        "exit 0\n"
    )
    mc.chmod(0o755)
    variables = {**init["environment"], **env}
    result = subprocess.run(
        ["/bin/sh", script],
        env={"PATH": str(bin_dir), **variables},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, calls.read_text() if calls.exists() else ""


def test_minio_init_makes_a_user_allowed_into_the_bucket_only(tmp_path: Path) -> None:
    result, calls = minio_init(tmp_path)
    assert result.returncode == 0, result.stderr
    init_env = config(tuple(BASE))["services"]["minio-init"]["environment"]
    bucket, user = init_env["LATENTQ_S3_BUCKET"], init_env["MINIO_LATENTQ_USER"]
    assert f"mb --ignore-existing latentq/{bucket}" in calls
    assert f"admin user add latentq {user} {REQUIRED['MINIO_LATENTQ_PASSWORD']}" in calls
    assert f"--user {user}" in calls.splitlines()[-1]
    policy = json.loads((tmp_path / "policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert not any("*" in action or "Admin" in action for action in actions)
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions


@pytest.mark.parametrize(
    "env",
    [
        {"MINIO_ROOT_PASSWORD": "CHANGE-ME-run-openssl-rand-hex-32"},
        {"MINIO_LATENTQ_PASSWORD": "change-me-too-but-long-enough"},
        {"MINIO_LATENTQ_PASSWORD": "short"},
        {"MINIO_LATENTQ_PASSWORD": REQUIRED["MINIO_ROOT_PASSWORD"]},
    ],
    ids=["root-placeholder", "user-placeholder", "short", "same-as-root"],
)
def test_minio_init_refuses_placeholder_secrets(tmp_path: Path, env: dict[str, str]) -> None:
    result, calls = minio_init(tmp_path, **env)
    assert result.returncode != 0
    assert "MINIO_" in result.stderr
    assert calls == "", "nothing is set up with a placeholder secret"


def test_the_compose_env_example_lists_the_required_secrets() -> None:
    example = (ROOT / "deploy" / "compose" / "compose.env.example").read_text().splitlines()
    entries = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert set(REQUIRED) <= set(entries)
    assert all("CHANGE-ME" in entries[name] for name in REQUIRED), "placeholders are marked"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_sentinel_override() -> None:
    """A replica and three Sentinels that monitor the primary by its service name; the API
    and the worker reach Redis through every Sentinel and wait for them."""
    services = config(tuple(SENTINEL))["services"]
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert len(sentinels) == 3
    replica = " ".join(services["redis-replica"]["command"])
    assert "--replicaof redis 6379" in replica and "--appendonly yes" in replica
    for name in sentinels:
        script = " ".join(services[name]["command"])
        assert "sentinel monitor latentq redis 6379 2" in script
        assert services[name]["volumes"], f"{name} keeps its rewritten configuration"
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert sorted(env["LATENTQ_REDIS_SENTINELS"].split(",")) == [
            f"{s}:26379" for s in sentinels
        ]
        assert env["LATENTQ_REDIS_SENTINEL_MASTER"] == "latentq"
        assert all(depends(services[name], s, "service_healthy") for s in sentinels)
