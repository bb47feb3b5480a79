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
