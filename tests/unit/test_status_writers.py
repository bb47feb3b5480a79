"""Only `jobs/lifecycle.py` writes a job's status: no other module of the project may write
the `status` field of a record, nor write a record's hash in a way that could.

The source is scanned, not run: a hash write (`hset`, `hsetnx`, `hmset`, `HSET` through
`execute_command`, or inside a Lua script) counts as a status write when it names `status`,
or when its fields cannot be read off the source (a mapping built at run time, a field held in
a variable) — those belong in `jobs.lifecycle` too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "jobs", "worker", "bench", "client")
THE_WRITER = Path("jobs/lifecycle.py")

_HASH_WRITES = {"hset", "hsetnx", "hmset"}
# A Redis hash write inside a script or a raw command, naming the status field.
_LUA_STATUS_WRITE = re.compile(r"\bH(?:M)?SET(?:NX)?\b[^\n]*\bstatus\b", re.IGNORECASE)


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _mapping_may_hold_status(node: ast.AST) -> bool:
    if not isinstance(node, ast.Dict):
        return True  # built at run time: its fields are not known here
    keys = [_literal(k) if k is not None else None for k in node.keys]
    return any(k is None or k == "status" for k in keys)


def _call_writes_status(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    args = list(call.args)
    if name == "execute_command":
        command = _literal(args[0]).lower() if args and _literal(args[0]) else None
        if command not in _HASH_WRITES:
            return False
        name, args = command, args[1:]
    if name not in _HASH_WRITES:
        return False
    # hset(key, field, value, mapping=..., items=...): every field must be a literal other
    # than "status", every mapping a literal dict without it.
    fields = args[1::2] if name != "hmset" else []
    if any(_literal(f) is None or _literal(f) == "status" for f in fields):
        return True
    if name == "hmset" and len(args) > 1 and _mapping_may_hold_status(args[1]):
        return True
    for keyword in call.keywords:
        if keyword.arg == "mapping" and _mapping_may_hold_status(keyword.value):
            return True
        if keyword.arg in ("items", None):  # items=[...] or **kwargs: not readable here
            return True
    return False


def status_writes(source: str) -> list[int]:
    """The line numbers where `source` writes (or may write) a record's status."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _call_writes_status(node):
            lines.append(node.lineno)
        text = _literal(node)
        if text is not None and _LUA_STATUS_WRITE.search(text):
            lines.append(node.lineno)
    return sorted(set(lines))


def project_modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if ".venv" not in path.parts
    )


def test_no_module_but_the_lifecycle_writes_a_status() -> None:
    offenders = {
        str(path): status_writes((ROOT / path).read_text())
        for path in project_modules()
        if path != THE_WRITER
    }
    assert {path: lines for path, lines in offenders.items() if lines} == {}


def test_the_lifecycle_itself_is_seen_writing() -> None:
    # The scan is not blind: it finds the writes that are allowed.
    assert THE_WRITER in project_modules()
    assert status_writes((ROOT / THE_WRITER).read_text())


# The status writes this project had outside the lifecycle, in the shapes they took.
FORMER_WRITERS = {
    "a reaper's pipeline": """
pipe.hset(
    record_key,
    mapping={
        "status": json.dumps(JobStatus.QUEUED.value),
        "started_at": "null",
    },
)
""",
    "a record written whole": """
pipe.hset(key, mapping={f: _encode(getattr(record, f)) for f in _FIELDS})
""",
    "a transition script": '''
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 8))
"""
''',
    "one field": 'client.hset(keys.job(job_id), "status", json.dumps("queued"))',
    "a field in a variable": "client.hset(key, field, value)",
    "a raw command": 'pipe.execute_command("HSET", key, "status", value)',
    "a mapping from elsewhere": "pipe.hset(keys.job(record.id), mapping=encode(record))",
    "hmset": 'client.hmset(key, {"status": "1"})',
}


@pytest.mark.parametrize("name", FORMER_WRITERS)
def test_the_scan_catches_each_way_of_writing_a_status(name: str) -> None:
    assert status_writes(FORMER_WRITERS[name]), name


def test_other_hash_writes_pass() -> None:
    assert status_writes('pipe.hset(key, "rq_id", value)') == []
    assert status_writes('client.hset(key, mapping={"tokens": "1", "at": "2"})') == []
    assert status_writes("redis.call('HSET', KEYS[1], 'tokens', tostring(tokens))") == []
    assert status_writes("redis.call('HGET', KEYS[1], 'status')") == []
