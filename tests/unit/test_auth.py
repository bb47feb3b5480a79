"""API key parsing, the keys command, and the open-mode guard."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.auth import KeyRing, hash_key
from app.keys import main as keys_main
from app.main import create_app
from app.settings import AppSettings


def test_key_ring() -> None:
    ring = KeyRing(f"alice:{hash_key('k1')}, bob:{hash_key('k2')}")
    assert ring.enabled
    assert ring.name_for("k1") == "alice" and ring.name_for("k2") == "bob"
    assert ring.name_for("k3") is None
    assert not KeyRing("").enabled


@pytest.mark.parametrize(
    "spec", ["alice", "alice:short", "al ice:" + "0" * 64, "alice:" + "G" * 64]
)
def test_malformed_entries_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="NAME:SHA256HEX"):
        KeyRing(spec)


def test_keys_command(capsys: pytest.CaptureFixture[str]) -> None:
    keys_main(["new", "carol"])
    out = capsys.readouterr().out
    key = out.split("it is not stored anywhere): ")[1].split()[0]
    entry = out.split("LATENTQ_API_KEYS entry: ")[1].strip()
    assert KeyRing(entry).name_for(key) == "carol"


def test_open_mode_answers_loopback_only(tmp_path: object) -> None:
    # The test client's address is not a loopback address; no Redis is needed to refuse it.
    app = create_app(AppSettings(api_keys="", allow_open=False))
    response = TestClient(app).get("/v1/models")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "open_mode"
    assert TestClient(app).get("/healthz").status_code == 200


def test_placeholders_are_refused() -> None:
    from jobs.settings import Settings

    with pytest.raises(ValueError, match="placeholder"):
        KeyRing("CHANGE-ME:" + "0" * 64)
    with pytest.raises(ValueError, match="placeholder"):
        Settings(signing_secret="CHANGE-ME-run-openssl-rand-hex-32").signing_key()  # type: ignore[arg-type]


# ---- open mode behind a proxy ----------------------------------------------------------------

PROXY = "172.31.240.10"
"""nginx's address on the compose network (docker-compose.yml)."""


def behind_proxy(trusted: str) -> TestClient:
    """The open-mode app as uvicorn runs it with `--proxy-headers --forwarded-allow-ips
    TRUSTED` (a flag the app cannot see), reached through a proxy."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    app = create_app(AppSettings(api_keys="", allow_open=False))
    return TestClient(
        ProxyHeadersMiddleware(app, trusted_hosts=trusted),  # type: ignore[arg-type]
        base_url="http://127.0.0.1:8000",
        client=(PROXY, 41000),
    )


@pytest.mark.parametrize("trusted", ["*", PROXY, f"{PROXY},127.0.0.1", "172.31.240.0/24"])
def test_a_forged_forwarded_for_does_not_pass_the_loopback_guard(trusted: str) -> None:
    """A remote client that sends `X-Forwarded-For: 127.0.0.1` gets it appended to by nginx:
    the API sees `127.0.0.1, <client>` from the proxy, and must not take it for loopback."""
    client = behind_proxy(trusted)
    forged = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9", "X-Real-IP": "203.0.113.9"}
    response = client.get("/v1/models", headers=forged)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "open_mode"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
        {"X-Real-IP": "203.0.113.9"},
        {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'},
    ],
)
def test_a_loopback_proxy_does_not_make_its_clients_loopback(headers: dict[str, str]) -> None:
    """Without --proxy-headers, a proxy on the same host is a loopback peer: the addresses
    it forwards for must be loopback too."""
    app = create_app(AppSettings(api_keys="", allow_open=False))
    client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 41000))
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "open_mode"


def test_loopback_clients_still_pass() -> None:
    app = create_app(AppSettings(api_keys="", allow_open=False))
    client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 41000))
    # No route: the guard let it through to the router (no Redis is needed for a 404).
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
        response = client.get("/v1/nowhere", headers=headers)
        assert response.status_code == 404, headers


@pytest.mark.parametrize("trusted", ["*", " * ", "10.0.0.1,*", "0.0.0.0/0", "::/0,127.0.0.1"])
def test_open_mode_refuses_to_start_when_every_forwarder_is_trusted(trusted: str) -> None:
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        create_app(AppSettings(api_keys="", allow_open=False, forwarded_allow_ips=trusted))
    # With API keys (or open on purpose behind an authenticating proxy) nothing depends on it.
    create_app(AppSettings(api_keys=f"alice:{hash_key('k')}", forwarded_allow_ips=trusted))
    create_app(AppSettings(api_keys="", allow_open=True, forwarded_allow_ips=trusted))


def test_forwarded_allow_ips_is_uvicorns_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        create_app(AppSettings(api_keys="", allow_open=False))


# ---- open mode: Host and Origin --------------------------------------------------------------


def local_client(**settings: object) -> TestClient:
    app = create_app(AppSettings(api_keys="", allow_open=False, **settings))  # type: ignore[arg-type]
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 41000))


@pytest.mark.parametrize("host", ["rebound.example:8000", "rebound.example", "10.0.0.5:8000"])
def test_open_mode_refuses_other_host_names(host: str) -> None:
    """DNS rebinding: a web page's own name, made to resolve to 127.0.0.1, arrives as Host."""
    response = local_client().get("/v1/models", headers={"Host": host})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize(
    "origin", ["https://attacker.example", "null", "http://127.0.0.1:9999", "http://localhost:8000"]
)
def test_open_mode_refuses_cross_origin_requests(origin: str) -> None:
    """A cross-site form post (or fetch) from a web page carries the page's Origin."""
    response = local_client().post(
        "/v1/jobs",
        headers={"Origin": origin},
        files={"params": (None, '{"type": "txt2img", "prompt": "x"}')},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cross_origin"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "localhost:8000"},
        {"Host": "[::1]:8000"},
        {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"},
        {"Host": "localhost", "Origin": "http://localhost"},
        {"Host": "gpu-box.lan:8000", "Origin": "http://gpu-box.lan:8000"},
    ],
)
def test_open_mode_answers_its_own_names_and_origin(headers: dict[str, str]) -> None:
    client = local_client(open_hosts="gpu-box.lan")
    # No route: the guard let it through to the router (no Redis is needed for a 404).
    assert client.post("/v1/nowhere", headers=headers).status_code == 404


def test_with_keys_host_and_origin_are_not_checked() -> None:
    app = create_app(AppSettings(api_keys=f"alice:{hash_key('k')}"))
    client = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 41000))
    headers = {"Host": "api.example.com", "Origin": "https://app.example.com"}
    assert client.post("/v1/nowhere", headers=headers).status_code == 404
