"""deploy/k8s: each overlay builds with kustomize, every resource validates against the
Kubernetes schemas offline, and the manifests hang together (selectors, references, probes,
GPU requests, the KEDA triggers against the catalogue)."""

from __future__ import annotations

import base64
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from jobs import keys
from jobs.catalog import Catalog, load_catalog
from jobs.protocol import Priority
from tests.deploy.helpers import DEPLOY, job_timeout_default, run, tool

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests are checked against (HPA v2, PDB v1 are GA there)."""

SECRET_KEYS = {
    "LATENTQ_API_KEYS",
    "LATENTQ_SIGNING_SECRET",
    "LATENTQ_WEBHOOK_SECRET",
    # A Redis URL may carry a password: a Secret, never a ConfigMap.
    "LATENTQ_REDIS_URL",
}
PLACEHOLDERS = SECRET_KEYS - {"LATENTQ_REDIS_URL"}
"""Secrets whose example value is a placeholder (the Redis URL's works as it is: the Redis of
redis.yaml needs no password inside the cluster)."""

COMMON_KINDS = Counter(
    {
        "Namespace": 1,
        "ConfigMap": 2,
        "Secret": 1,
        "Service": 3,
        "PersistentVolumeClaim": 3,
        "Deployment": 2,
        "StatefulSet": 1,
        "HorizontalPodAutoscaler": 1,
        "PodDisruptionBudget": 2,
        "Ingress": 1,
    }
)
EXPECTED_KINDS = {
    "base": COMMON_KINDS,
    "overlays/dev": COMMON_KINDS,
    "overlays/gpu": COMMON_KINDS + Counter({"ScaledObject": 1}),
    # Three Sentinels (StatefulSet, Service, scripts, PodDisruptionBudget) and a budget for
    # the two Redis pods.
    "overlays/sentinel": COMMON_KINDS
    + Counter(
        {
            "ScaledObject": 1,
            "StatefulSet": 1,
            "Service": 1,
            "ConfigMap": 1,
            "PodDisruptionBudget": 2,
        }
    ),
}
OVERLAYS = list(EXPECTED_KINDS)


Docs = tuple[dict[str, Any], ...]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Docs]:
    """Every overlay built by kustomize, from a copy of deploy/k8s whose base/secrets.env is
    made from its example, as a user would."""
    target = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(target / "base" / "secrets.env.example", target / "base" / "secrets.env")
    kubectl = tool("kubectl")
    result: dict[str, Docs] = {}
    for overlay in OVERLAYS:
        built = run([kubectl, "kustomize", str(target / overlay)])
        assert built.returncode == 0, f"kubectl kustomize {overlay} failed:\n{built.stderr}"
        result[overlay] = tuple(doc for doc in yaml.safe_load_all(built.stdout) if doc)
    return result


def find(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    """The one resource of a kind and name (generated ConfigMaps and Secrets by their name
    before kustomize's hash suffix)."""
    of_kind = [d for d in docs if d["kind"] == kind]
    found = [d for d in of_kind if name is None or d["metadata"]["name"] == name]
    if not found and name is not None:
        found = [d for d in of_kind if d["metadata"]["name"].startswith(name + "-")]
    assert len(found) == 1, f"one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: Docs, deployment: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its envFrom ConfigMaps and Secrets, then its own env."""
    env: dict[str, str] = {}
    c = container(deployment)
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            data = find(docs, "Secret", source["secretRef"]["name"])["data"]
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    env.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
    return env


def catalog_of(docs: Docs, tmp_path: Path) -> Catalog:
    data = find(docs, "ConfigMap", "latentq-catalog")["data"]
    path = tmp_path / "models.toml"
    path.write_text(data["models.toml"])
    return load_catalog(path)


def gpus(deployment: dict[str, Any]) -> Any:
    resources = container(deployment).get("resources", {})
    return resources.get("limits", {}).get("nvidia.com/gpu")


# ---- building and validating ---------------------------------------------------------------


def test_the_secret_example_is_complete() -> None:
    example = (K8S / "base" / "secrets.env.example").read_text().splitlines()
    entries = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
    assert set(entries) == SECRET_KEYS
    assert all("CHANGE-ME" in entries[k] for k in PLACEHOLDERS), "placeholders are marked"
    compose_example = (DEPLOY / "compose" / "secrets.env.example").read_text().splitlines()
    assert {line.split("=")[0] for line in compose_example if "=" in line} == PLACEHOLDERS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_config_map_holds_a_secret(rendered: dict[str, Docs], overlay: str) -> None:
    """ConfigMaps are readable by whoever may read the namespace's configuration, and end up
    in logs and dumps: the Redis URL (which may carry a password) lives in the Secret."""
    for doc in rendered[overlay]:
        if doc["kind"] != "ConfigMap":
            continue
        for name, value in doc.get("data", {}).items():
            assert name not in SECRET_KEYS, f"{doc['metadata']['name']} holds {name}"
            assert not re.search(r"://[^/\s@]*:[^/\s@]*@", value), f"{name} holds credentials"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_resources(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    assert Counter(d["kind"] for d in docs) == EXPECTED_KINDS[overlay]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "latentq", doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Docs], overlay: str
) -> None:
    checked = 0
    for doc in rendered[overlay]:
        if doc["apiVersion"].startswith("keda.sh/"):
            # A CRD: kubernetes-validate only knows the built-in kinds, and KEDA's schema is
            # not packaged anywhere installable; test_keda_scaled_object checks it instead.
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= sum(COMMON_KINDS.values())


def test_the_validator_does_reject_a_bad_manifest(rendered: dict[str, Docs]) -> None:
    deployment = dict(find(rendered["base"], "Deployment", "latentq-api"))
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ---- references hang together --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pod_specs = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for template in pod_specs:
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "persistentVolumeClaim" in volume:
                assert (
                    "PersistentVolumeClaim",
                    volume["persistentVolumeClaim"]["claimName"],
                ) in names
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            declared = {v["name"] for v in spec.get("volumes", [])}
            declared |= {t["metadata"]["name"] for t in docs_claim_templates(docs, template)}
            assert mounted <= declared
    for doc in docs:
        selector = None
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        if selector is not None:
            matching = [t for t in pod_specs if selector.items() <= t["metadata"]["labels"].items()]
            assert matching, f"{doc['kind']}/{doc['metadata']['name']} selects no pods"
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in names


def docs_claim_templates(docs: Docs, template: dict[str, Any]) -> list[Any]:
    for d in docs:
        if d["kind"] == "StatefulSet" and d["spec"]["template"] is template:
            return list(d["spec"].get("volumeClaimTemplates", []))
    return []


def test_ingress_reaches_the_api(rendered: dict[str, Docs]) -> None:
    docs = rendered["base"]
    ingress = find(docs, "Ingress", "latentq-api")
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = find(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) >= 48


def ingress_routes(ingress: dict[str, Any], path: str) -> bool:
    """Whether the Ingress sends `path` to a backend (Kubernetes' Exact and Prefix rules:
    a Prefix matches whole path elements)."""
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            prefix, kind = entry["path"], entry["pathType"]
            if kind == "Exact" and path == prefix:
                return True
            elements = prefix.rstrip("/").split("/")
            if kind == "Prefix" and path.split("/")[: len(elements)] == elements:
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_keeps_metrics_and_docs_in_the_cluster(
    rendered: dict[str, Docs], overlay: str
) -> None:
    ingress = find(rendered[overlay], "Ingress", "latentq-api")
    for path in ("/", "/v1/jobs", "/v1/files/jobs/x/0.png", "/static/js/main.js"):
        assert ingress_routes(ingress, path), path
    for path in ("/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        assert not ingress_routes(ingress, path), f"{path} is reachable through the Ingress"


# ---- the pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    api = find(docs, "Deployment", "latentq-api")
    c = container(api)
    assert c["image"].startswith("latentq-api")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in c["ports"]} == {8000}
    assert api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    env = env_of(docs, api)
    assert env["LATENTQ_CATALOG"].startswith("/etc/latentq/")
    assert env["LATENTQ_PUBLIC_URL"].startswith("http")
    hpa = find(docs, "HorizontalPodAutoscaler", "latentq-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "latentq-api"
    assert "replicas" not in api["spec"] or overlay == "overlays/dev"
    secret = find(docs, "Secret", "latentq-secrets")
    assert set(secret["data"]) == SECRET_KEYS
    signing = base64.b64decode(secret["data"]["LATENTQ_SIGNING_SECRET"]).decode()
    assert len(signing) >= 16, "the signing secret is at least 16 characters"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker(rendered: dict[str, Docs], overlay: str, tmp_path: Path) -> None:
    docs = rendered[overlay]
    worker = find(docs, "Deployment", "latentq-worker")
    c = container(worker)
    assert c["image"].startswith("latentq-worker")
    probe = c["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get(probe["port"], probe["port"]) == 9100
    env = env_of(docs, worker)
    assert env["LATENTQ_METRICS_PORT"] == "9100"
    # The probes above and Prometheus reach the pod's address, not its loopback.
    assert env["LATENTQ_METRICS_HOST"] == "0.0.0.0"
    timeout = int(env.get("LATENTQ_JOB_TIMEOUT_S", job_timeout_default()))
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > timeout
    # The worker and the API read the same catalogue.
    api = find(docs, "Deployment", "latentq-api")
    assert env["LATENTQ_CATALOG"] == env_of(docs, api)["LATENTQ_CATALOG"]
    catalog = catalog_of(docs, tmp_path)
    for entry in catalog.models:
        path = catalog.local_path(entry)
        assert path is None or entry.source.startswith("/"), "sources in the image are absolute"
    assert env["HF_HOME"] in {m["mountPath"] for m in c["volumeMounts"]}


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_gpu_workers(rendered: dict[str, Docs], overlay: str) -> None:
    worker = find(rendered[overlay], "Deployment", "latentq-worker")
    assert int(gpus(worker)) == 1
    assert env_of(rendered[overlay], worker)["LATENTQ_DEVICE"].startswith("cuda")


def test_dev_overlay_is_small_and_cpu_only(rendered: dict[str, Docs], tmp_path: Path) -> None:
    docs = rendered["overlays/dev"]
    for name in ("latentq-api", "latentq-worker"):
        assert find(docs, "Deployment", name)["spec"]["replicas"] == 1
    worker = find(docs, "Deployment", "latentq-worker")
    assert gpus(worker) is None
    assert "nvidia.com/gpu" not in yaml.safe_dump(list(docs)).replace("key: nvidia.com/gpu", "")
    assert env_of(docs, worker)["LATENTQ_DEVICE"] == "cpu"
    assert find(docs, "HorizontalPodAutoscaler", "latentq-api")["spec"]["minReplicas"] == 1
    # The demo model gets built into /models: that mount must be writable.
    catalog = catalog_of(docs, tmp_path)
    assert all(entry.demo for entry in catalog.models)
    models = [m for m in container(worker)["volumeMounts"] if m["mountPath"] == "/models"]
    assert models and not models[0].get("readOnly", False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    redis = find(docs, "StatefulSet", "redis")
    args = " ".join(container(redis)["args"])
    if overlay == "overlays/sentinel":
        # The start script passes the flags (and --replicaof, on the replica).
        args = (K8S / "overlays" / "sentinel" / "redis-start.sh").read_text()
    assert "--appendonly yes" in args and "--appendfsync everysec" in args
    assert "--maxmemory-policy noeviction" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    data = {m["name"] for m in container(redis)["volumeMounts"] if m["mountPath"] == "/data"}
    assert data == {claim["metadata"]["name"]}, "the data are on the claim"
    service = find(docs, "Service", redis["spec"]["serviceName"])
    port = service["spec"]["ports"][0]["port"]
    api = find(docs, "Deployment", "latentq-api")
    assert env_of(docs, api)["LATENTQ_REDIS_URL"].startswith(
        f"redis://{service['metadata']['name']}:{port}/"
    )


# ---- KEDA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/sentinel"])
def test_keda_scaled_object(rendered: dict[str, Docs], tmp_path: Path, overlay: str) -> None:
    """The ScaledObject, structurally (its CRD schema is not available offline): it scales
    the worker Deployment on the Redis lists of exactly the catalogue's queues, read from
    the Redis the API and the workers use (through the Sentinels in that overlay)."""
    docs = rendered[overlay]
    scaled = find(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {
        "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
        "cooldownPeriod", "idleReplicaCount", "initialCooldownPeriod", "fallback",
        "advanced", "triggers",
    }  # fmt: skip
    worker = find(docs, "Deployment", "latentq-worker")
    target = spec["scaleTargetRef"]
    assert target["name"] == worker["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert scaled["metadata"]["namespace"] == worker["metadata"]["namespace"]
    assert "replicas" not in worker["spec"], "KEDA owns the worker count"
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        assert isinstance(spec.get(field, 0), int), field
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert all(h["spec"]["scaleTargetRef"]["name"] != target["name"] for h in hpas)

    redis = find(docs, "Service", "redis")
    namespace = redis["metadata"]["namespace"]
    address = f"redis.{namespace}.svc.cluster.local:{redis['spec']['ports'][0]['port']}"
    env = env_of(docs, worker)
    api_env = env_of(docs, find(docs, "Deployment", "latentq-api"))
    assert env.get("LATENTQ_REDIS_SENTINELS") == api_env.get("LATENTQ_REDIS_SENTINELS")
    catalog = catalog_of(docs, tmp_path)
    expected = {f"rq:queue:{keys.queue(m.id, p)}" for m in catalog.models for p in Priority}
    triggers = spec["triggers"]
    lists = set()
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata are strings"
        if overlay == "overlays/sentinel":
            assert trigger["type"] == "redis-sentinel"
            assert metadata["sentinelMaster"] == env["LATENTQ_REDIS_SENTINEL_MASTER"]
            addresses = [a.strip() for a in metadata["addresses"].split(",")]
            # The same Sentinels as the workers', by their full names.
            short = [a.split(".", 1)[0] for a in env["LATENTQ_REDIS_SENTINELS"].split(",")]
            assert [a.split(".", 1)[0] for a in addresses] == short
            assert all(a.endswith(f".{namespace}.svc.cluster.local:26379") for a in addresses)
        else:
            assert trigger["type"] == "redis"
            assert metadata["address"] == address
            assert "LATENTQ_REDIS_SENTINELS" not in env
        assert int(metadata["listLength"]) > 0
        lists.add(metadata["listName"])
    assert len(lists) == len(triggers), "one trigger per list"
    assert lists == expected, "one trigger per model and priority of the catalogue"
    modifiers = spec["advanced"]["scalingModifiers"]
    names = {t["name"] for t in triggers}
    terms = {term.strip() for term in modifiers["formula"].split("+")}
    assert terms == names, "the formula adds up every trigger"
    assert float(modifiers["target"]) > 0
    assert all(isinstance(modifiers[k], str) for k in ("formula", "target"))


# ---- what every workload has ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_and_resources(rendered: dict[str, Docs], overlay: str) -> None:
    for doc in rendered[overlay]:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{overlay} {doc['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, f"{where}: probes"
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{where}: cpu and memory requests"
            assert "memory" in c["resources"].get("limits", {}), f"{where}: a memory limit"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_cover_the_api_and_the_workers(
    rendered: dict[str, Docs], overlay: str
) -> None:
    docs = rendered[overlay]
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for name in ("latentq-api", "latentq-worker"):
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, f"{overlay}: one budget for {name}"
        spec = covering[0]["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec)


def test_sentinel_overlay(rendered: dict[str, Docs]) -> None:
    """Two Redis pods, three Sentinels with a quorum that a drain cannot break, and the API and
    workers pointed at every Sentinel."""
    docs = rendered["overlays/sentinel"]
    redis = find(docs, "StatefulSet", "redis")
    sentinels = find(docs, "StatefulSet", "redis-sentinel")
    assert redis["spec"]["replicas"] == 2
    assert sentinels["spec"]["replicas"] == 3
    service = find(docs, "Service", sentinels["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "headless: each Sentinel has its own name"
    port = service["spec"]["ports"][0]["port"]
    env = env_of(docs, find(docs, "Deployment", "latentq-worker"))
    named = sorted(env["LATENTQ_REDIS_SENTINELS"].split(","))
    assert named == [
        f"{sentinels['metadata']['name']}-{i}.{service['metadata']['name']}:{port}"
        for i in range(3)
    ]
    scripts = find(docs, "ConfigMap", "redis-sentinel-scripts")["data"]
    monitor = next(
        line for line in scripts["sentinel-start.sh"].splitlines() if "sentinel monitor" in line
    )
    master, quorum = monitor.split()[2], int(monitor.split()[-1])
    assert master == env["LATENTQ_REDIS_SENTINEL_MASTER"]
    assert quorum == 2
    budget = find(docs, "PodDisruptionBudget", "redis-sentinel")
    assert budget["spec"]["minAvailable"] >= quorum
    assert find(docs, "PodDisruptionBudget", "redis")["spec"]["maxUnavailable"] == 1
    for script in scripts:
        result = run(["sh", "-n", str(K8S / "overlays" / "sentinel" / script)])
        assert result.returncode == 0, f"{script}: {result.stderr}"
