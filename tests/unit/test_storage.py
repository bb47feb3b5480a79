"""Local storage: signed URLs, expiry, tampering, path traversal."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from jobs.errors import FileNotFound, Forbidden
from jobs.settings import Settings
from jobs.storage import LocalStorage, check_key, content_type


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", b"k" * 32)


def split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return unquote(parts.path.removeprefix("/v1/files/")), query["expires"][0], query["sig"][0]


def test_put_get_and_signed_url_round_trip(storage: LocalStorage) -> None:
    storage.put("jobs/j_1/0.png", b"png bytes")
    assert storage.get("jobs/j_1/0.png") == b"png bytes"
    key, expires, sig = split(storage.signed_path("jobs/j_1/0.png", 60, now=1000))
    assert key == "jobs/j_1/0.png" and expires == "1060"
    storage.verify(key, expires, sig, now=1059)


def test_expired_url_is_refused(storage: LocalStorage) -> None:
    key, expires, sig = split(storage.signed_path("jobs/j_1/0.png", 60, now=1000))
    with pytest.raises(Forbidden) as info:
        storage.verify(key, expires, sig, now=1061)
    assert info.value.code == "url_expired"


@pytest.mark.parametrize("tamper", ["key", "expires", "sig"])
def test_tampered_url_is_refused(storage: LocalStorage, tamper: str) -> None:
    key, expires, sig = split(storage.signed_path("jobs/j_1/0.png", 60, now=1000))
    if tamper == "key":
        key = "jobs/j_2/0.png"
    elif tamper == "expires":
        expires = "99999999999"
    else:
        sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    with pytest.raises(Forbidden) as info:
        storage.verify(key, expires, sig, now=1000)
    assert info.value.code == "invalid_signature"


def test_signature_depends_on_the_secret(tmp_path: Path) -> None:
    one = LocalStorage(tmp_path, b"a" * 32)
    other = LocalStorage(tmp_path, b"b" * 32)
    key, expires, sig = split(one.signed_path("jobs/j/0.png", 60, now=0))
    with pytest.raises(Forbidden):
        other.verify(key, expires, sig, now=0)


@pytest.mark.parametrize(
    "key",
    [
        "../secret",
        "jobs/../../etc/passwd",
        "/etc/passwd",
        "jobs/./x",
        "jobs//x",
        ".hidden",
        "jobs/.signing.key",
        "",
        "jobs/x\x00",
        "a\\b",
        "jobs/x/",
    ],
)
def test_traversal_and_odd_keys_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(FileNotFound):
        check_key(key)
    with pytest.raises(FileNotFound):
        storage.path(key)


def test_symlink_out_of_the_root_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    storage.root.mkdir(parents=True, exist_ok=True)
    (storage.root / "link").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(FileNotFound):
        storage.path("link")


def test_missing_file(storage: LocalStorage) -> None:
    with pytest.raises(FileNotFound):
        storage.get("jobs/none/0.png")


def test_content_types() -> None:
    assert content_type("a/0.png") == "image/png"
    assert content_type("a/0.jpg") == "image/jpeg"
    assert content_type("a/0.webp") == "image/webp"


def test_signing_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_key()
    second = Settings(data_dir=tmp_path).signing_key()
    assert first == second and len(first) >= 32
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    configured = Settings(data_dir=tmp_path, signing_secret="s" * 20).signing_key()  # type: ignore[arg-type]
    assert configured == b"s" * 20


def test_the_key_file_is_made_through_a_name_no_other_container_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every container is PID 1: on a shared volume, a temp name made from the PID is the
    one another container is writing its own key through at that moment."""
    import os

    monkeypatch.setattr(os, "getpid", lambda: 1)
    theirs = tmp_path / ".signing.key.1"
    theirs.write_bytes(b"another container's key, half written")
    key = Settings(data_dir=tmp_path).signing_key()
    assert theirs.read_bytes() == b"another container's key, half written"
    assert len(key) == 64 and (tmp_path / "signing.key").read_bytes().strip() == key
    leftovers = {p.name for p in tmp_path.iterdir()} - {"signing.key", ".signing.key.1"}
    assert leftovers == set(), "the temp file is gone once the key is in place"


def test_containers_starting_together_agree_on_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(os, "getpid", lambda: 1)
    for attempt in range(5):
        folder = tmp_path / str(attempt)
        together = threading.Barrier(16)

        def first_start(
            _: int, folder: Path = folder, together: threading.Barrier = together
        ) -> bytes:
            together.wait()
            return Settings(data_dir=folder).signing_key()

        with ThreadPoolExecutor(16) as pool:
            keys = set(pool.map(first_start, range(16)))
        assert len(keys) == 1
        (key,) = keys
        assert len(key) == 64 and (folder / "signing.key").read_bytes().strip() == key


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_bytes(b"")
    with pytest.raises(ValueError, match="signing.key"):
        Settings(data_dir=tmp_path).signing_key()


def test_short_configured_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(data_dir=tmp_path, signing_secret="short").signing_key()  # type: ignore[arg-type]


def test_purge_deletes_only_expired_jobs(storage: LocalStorage) -> None:
    import os

    storage.put("alice/j_old/0.png", b"old")
    storage.put("alice/j_new/0.png", b"new")
    old_folder = storage.root / "alice" / "j_old"
    os.utime(old_folder, (1000, 1000))
    assert storage.purge_jobs(older_than_s=3600, now=1000 + 3601) == 1
    assert not old_folder.exists()
    assert storage.get("alice/j_new/0.png") == b"new"
    assert storage.purge_jobs(older_than_s=3600) == 0


def test_purge_of_an_empty_store(tmp_path: Path) -> None:
    assert LocalStorage(tmp_path / "nothing", b"k" * 32).purge_jobs(60) == 0
