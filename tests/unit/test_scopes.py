"""Key scopes: how entries carry them, their defaults, and the checks they gate."""

from __future__ import annotations

import pytest

from app.auth import KeyRing, hash_key
from app.keys import main as keys_main
from app.scopes import ADMIN, EVERY_SCOPE, PRIORITY_HIGH, check_priority, owner_filter
from jobs.errors import Forbidden
from jobs.protocol import Priority


def test_entries_carry_scopes_and_old_entries_keep_working() -> None:
    ring = KeyRing(
        f"old:{hash_key('k0')},fast:{hash_key('k1')}:priority:high,"
        f"root:{hash_key('k2')}:admin,none:{hash_key('k3')}:"
    )
    assert ring.name_for("k0") == "old" and ring.name_for("k1") == "fast"
    # An entry written before scopes existed has the default ones: none.
    assert ring.scopes_of("old") == frozenset()
    assert ring.scopes_of("fast") == {PRIORITY_HIGH}
    assert ring.scopes_of("root") == EVERY_SCOPE  # admin implies the others
    assert ring.scopes_of("none") == frozenset()


def test_default_scopes_apply_to_entries_without_any() -> None:
    ring = KeyRing(f"old:{hash_key('k0')},root:{hash_key('k2')}:admin", "priority:high")
    assert ring.scopes_of("old") == {PRIORITY_HIGH}
    assert ring.scopes_of("root") == EVERY_SCOPE


def test_open_mode_may_use_every_priority_but_is_no_admin() -> None:
    scopes = KeyRing("").scopes_of("anonymous")
    assert scopes == {PRIORITY_HIGH}
    # It reads its own (open-mode) jobs, not those of keys sharing its Redis.
    assert owner_filter("anonymous", scopes) == "anonymous"


def test_unknown_scopes_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="alice: unknown API key scope 'priority:urgent'"):
        KeyRing(f"alice:{hash_key('k')}:priority:urgent")
    with pytest.raises(ValueError, match="unknown API key scope 'root'"):
        KeyRing(f"alice:{hash_key('k')}", "root")


def test_high_priority_needs_its_scope() -> None:
    with pytest.raises(Forbidden) as refused:
        check_priority(Priority.HIGH, frozenset())
    assert refused.value.code == "priority_not_allowed" and refused.value.param == "priority"
    check_priority(Priority.NORMAL, frozenset())
    check_priority(Priority.LOW, frozenset())
    check_priority(Priority.HIGH, frozenset({PRIORITY_HIGH}))


def test_admin_sees_every_owner() -> None:
    assert owner_filter("alice", frozenset()) == "alice"
    assert owner_filter("alice", frozenset({PRIORITY_HIGH})) == "alice"
    assert owner_filter("root", frozenset({ADMIN})) is None


def test_keys_command_writes_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    keys_main(["new", "carol", "--scope", "priority:high", "--scope", "admin"])
    out = capsys.readouterr().out
    key = out.split("it is not stored anywhere): ")[1].split()[0]
    entry = out.split("LATENTQ_API_KEYS entry: ")[1].strip()
    assert entry.endswith(":priority:high+admin")
    ring = KeyRing(entry)
    assert ring.name_for(key) == "carol" and ring.scopes_of("carol") == EVERY_SCOPE
    keys_main(["hash", "dave", "lq_dave"])
    assert capsys.readouterr().out.strip().endswith(f"dave:{hash_key('lq_dave')}")
