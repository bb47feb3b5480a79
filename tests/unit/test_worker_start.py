"""What a worker does at start when it shares its name or its models volume with another."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from rq import SimpleWorker

from jobs.catalog import ModelEntry
from worker.main import build_demo_model, forget_dead_namesake


def test_a_restarted_worker_takes_over_its_dead_namesakes_registration() -> None:
    connection = fakeredis.FakeRedis()
    dead = SimpleWorker([], name="host.1", connection=connection)
    dead.register_birth()  # then killed: no death registered
    again = SimpleWorker([], name="host.1", connection=connection)
    with pytest.raises(ValueError, match="active worker named"):
        again.register_birth()
    forget_dead_namesake(again)
    again.register_birth()
    assert not connection.hexists(again.key, "death")


def test_forgetting_leaves_another_name_alone() -> None:
    connection = fakeredis.FakeRedis()
    other = SimpleWorker([], name="host.2", connection=connection)
    other.register_birth()
    forget_dead_namesake(SimpleWorker([], name="host.1", connection=connection))
    assert not connection.hexists(other.key, "death")


def test_demo_model_built_by_another_worker_first_is_kept(tmp_path: Path) -> None:
    entry = ModelEntry(id="tiny", source=str(tmp_path / "tiny"), family="sd1", demo=True)
    target = tmp_path / "tiny"
    build_demo_model(entry, target)
    index = (target / "model_index.json").read_bytes()
    mtime = (target / "model_index.json").stat().st_mtime_ns
    # A second worker that found it missing a moment earlier builds too: its copy is dropped.
    build_demo_model(entry, target)
    assert (target / "model_index.json").read_bytes() == index
    assert (target / "model_index.json").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"], "no staging folder is left"
