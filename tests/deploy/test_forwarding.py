"""Who the API believes about a client's address, in every shipped way to run it.

Behind a proxy uvicorn (`--proxy-headers`) takes the client's address from `X-Forwarded-For`,
but only from the peers in `FORWARDED_ALLOW_IPS`. Trusting every peer (`*`) lets any client
that reaches the API, or that sends its own `X-Forwarded-For` through nginx (which appends
to it), claim an address of its choosing, such as 127.0.0.1 for open mode's loopback guard.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml

from app.auth import trusts_every_forwarder
from tests.deploy.helpers import DEPLOY, ROOT, load_supervise


def test_compose_trusts_nginx_alone() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    trusted = services["api"]["environment"]["FORWARDED_ALLOW_IPS"]
    assert not trusts_every_forwarder(trusted)
    address = services["nginx"]["networks"]["default"]["ipv4_address"]
    assert trusted == address, "the API believes X-Forwarded-For from nginx's address only"
    # nginx's fixed address is on the stack's network, which every other service joins.
    (subnet,) = compose["networks"]["default"]["ipam"]["config"]
    network = ipaddress.ip_network(default_of(subnet["subnet"]))
    assert ipaddress.ip_address(default_of(address)) in network
    for name, service in services.items():
        assert set(service.get("networks", ["default"])) == {"default"}, name


def default_of(value: str) -> str:
    """The default of a compose `${VAR:-default}` value (or the value itself)."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]+)\}", value)
    return match.group(1) if match else value


def test_kubernetes_trusts_the_cluster_network_only() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "api.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    trusted = env["FORWARDED_ALLOW_IPS"]
    assert not trusts_every_forwarder(trusted)
    for item in trusted.split(","):
        network = ipaddress.ip_network(item.strip())
        assert network.is_private, f"{network} holds public addresses"


def test_the_image_and_make_run_trust_no_forwarder_by_default(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for command in re.findall(r"^CMD\s+(\[.*?\])\s*$", dockerfile, re.MULTILINE | re.DOTALL):
        args = yaml.safe_load(command.replace("\\\n", ""))
        assert "*" not in args and not any("forwarded-allow-ips=*" in a for a in args)
    assert "FORWARDED_ALLOW_IPS" not in re.sub(r"#.*", "", dockerfile), (
        "uvicorn's default (127.0.0.1) holds in the image; deployments set their proxy's"
    )
    # `make run` has no proxy in front of it: uvicorn reads no forwarding headers at all.
    supervise = load_supervise()
    programs, _, _ = supervise.programs(
        ROOT, tmp_path, "127.0.0.1", 8000, 1, {"LATENTQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    (api,) = [p for p in programs if p.name == "api"]
    words = list(api.argv)
    assert "uvicorn" in words
    assert "--proxy-headers" not in words
    assert not any(w.startswith("--forwarded-allow-ips") for w in words)
