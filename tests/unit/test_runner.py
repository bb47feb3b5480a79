"""The runner's micro-batches, with the moves it asks for kept in memory: a time limit that
goes off is never swallowed (no job of the batch runs again alone past it), and every job
the worker holds keeps its lease while another one runs alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rq.timeouts import JobTimeoutException

from jobs.batching import batch_key
from jobs.catalog import Catalog
from jobs.errors import FailureCode
from jobs.protocol import JobStatus, utcnow
from jobs.records import JobError, JobRecord
from jobs.storage import LocalStorage
from tests.records import job_record
from worker.runner import WorkerContext, execute

PARAMS = {
    "type": "txt2img",
    "model": "m",
    "prompt": "p",
    "steps": 4,
    "width": 64,
    "height": 64,
    "scheduler": "euler",
    "guidance_scale": 5.0,
}


def job(seed: int) -> JobRecord:
    return job_record({**PARAMS, "seed": seed, "prompt": f"job {seed}"}, timeout_s=10)


@dataclass
class Beat:
    stepping: frozenset[str]
    """Jobs whose progress was written."""
    renewed: frozenset[str]
    """Jobs whose lease was renewed."""


@dataclass
class Moves:
    """What `jobs.lifecycle` would do, in memory: each job's record, and every beat."""

    records: dict[str, JobRecord] = field(default_factory=dict)
    beats: list[Beat] = field(default_factory=list)

    @property
    def store(self) -> Moves:
        return self

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def status(self, job_id: str) -> JobStatus:
        return self.records[job_id].status

    def _move(self, record: JobRecord, **update: Any) -> JobRecord:
        self.records[record.id] = self.records[record.id].model_copy(update=update)
        return self.records[record.id]

    def _held_by(self, job_id: str, worker: str) -> bool:
        record = self.records[job_id]
        return record.status is JobStatus.RUNNING and record.worker == worker

    def start(self, record: JobRecord, worker: str, take_from_queue: bool = False) -> Any:
        if self.records[record.id].status is not JobStatus.QUEUED:
            return None
        return self._move(record, status=JobStatus.RUNNING, worker=worker, started_at=utcnow())

    def progress(self, worker: str, steps: dict[str, Any], held: Any) -> set[str]:
        renewed = {r.id for r in held} | set(steps)
        self.beats.append(Beat(frozenset(steps), frozenset(renewed)))
        return {job_id for job_id in renewed if not self._held_by(job_id, worker)}

    def _end(self, record: JobRecord, worker: str, **update: Any) -> bool:
        if not self._held_by(record.id, worker):
            return False
        self._move(record, finished_at=utcnow(), **update)
        return True

    def succeed(self, record: JobRecord, worker: str, images: Any, timings: Any) -> bool:
        return self._end(record, worker, status=JobStatus.SUCCEEDED, images=images)

    def fail(self, record: JobRecord, worker: str, code: FailureCode, message: str) -> bool:
        error = JobError(code=code.value, message=message)
        return self._end(record, worker, status=JobStatus.FAILED, error=error)

    def expire(self, record: JobRecord, worker: str) -> bool:
        return self.fail(record, worker, FailureCode.TIMEOUT, "past its time limit")

    def give_back(self, record: JobRecord, worker: str) -> bool:
        return self._end(record, worker, status=JobStatus.QUEUED, worker=None)

    def outcomes(self) -> dict[str, str]:
        return {
            job_id: r.error.code if r.error else r.status.value
            for job_id, r in self.records.items()
        }


class Model:
    """A pipeline whose calls follow a script: per call ("batch" or a job's prompt), an
    exception to raise at step 2, or "black" images."""

    base = object()  # takes lists of prompts: it batches

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.calls: list[str] = []

    def txt2img(self, params: Any, on_step: Any, decode_fp32: bool = False, **batch: Any) -> Any:
        name = "batch" if "prompts" in batch else params.prompt
        self.calls.append(name + (" fp32" if decode_fp32 else ""))
        count = len(batch["prompts"]) if "prompts" in batch else params.n
        outcome = None if decode_fp32 else self.script.get(name)
        for step in range(1, params.steps + 1):
            on_step(step, params.steps)
            if step == 2 and isinstance(outcome, BaseException):
                raise outcome
        colours = [(0, 0, 0) if outcome == "black" and i == 0 else (9, 9, 9) for i in range(count)]
        return [Image.new("RGB", (64, 64), colour) for colour in colours]

    def batch_key(self, params: Any) -> Any:
        return batch_key(params)

    def release(self) -> None:
        pass


class Companions:
    """A batcher that finds the given jobs queued and compatible."""

    def __init__(self, moves: Moves, records: list[JobRecord]) -> None:
        self.moves = moves
        self.records = records

    def take(self, lead: JobRecord, wanted: Any, room: int, key_of: Any) -> list[JobRecord]:
        taken = [self.moves.start(r, "w", take_from_queue=True) for r in self.records]
        self.records = []
        return taken


def batch_context(
    tmp_path: Path, moves: Moves, model: Model, records: list[JobRecord]
) -> WorkerContext:
    """Worker `w` holding `model` as `m`; the first of `records` is the lead, the rest its
    companions."""
    return WorkerContext(
        name="w",
        lifecycle=moves,  # type: ignore[arg-type]
        storage=LocalStorage(tmp_path, b"k" * 32),
        models={"m": model},
        batcher=Companions(moves, records[1:]),  # type: ignore[arg-type]
        batch_max=8,
        batch_max_pixels=8 * 64 * 64,
    )


def run_batch(tmp_path: Path, script: dict[str, Any]) -> tuple[Moves, Model, list[str], str]:
    """Three compatible jobs, run as one batch by worker `w`: the moves, the model, the job
    ids and the lead's outcome."""
    moves, model = Moves(), Model(script)
    records = [job(seed) for seed in (1, 2, 3)]
    moves.records = {r.id: r for r in records}
    context = batch_context(tmp_path, moves, model, records)
    outcome = execute(context, records[0].id)
    assert context.held.jobs == {}  # nothing is held once the run is over
    return moves, model, [r.id for r in records], outcome


def test_a_time_limit_in_the_batched_call_ends_every_job_of_it(tmp_path: Path) -> None:
    moves, model, ids, outcome = run_batch(tmp_path, {"batch": JobTimeoutException("late")})
    assert outcome == "timeout"
    assert moves.outcomes() == {job_id: "timeout" for job_id in ids}
    assert model.calls == ["batch"]  # none of them ran again alone, past the limit


def test_a_time_limit_in_the_one_by_one_fallback_ends_the_jobs_still_held(
    tmp_path: Path,
) -> None:
    script = {"batch": RuntimeError("boom"), "job 1": JobTimeoutException("late")}
    moves, model, ids, outcome = run_batch(tmp_path, script)
    assert outcome == "timeout"
    assert moves.outcomes() == {job_id: "timeout" for job_id in ids}
    assert model.calls == ["batch", "job 1"]


def held_while_running(moves: Moves, job_id: str) -> set[frozenset[str]]:
    return {beat.renewed for beat in moves.beats if beat.stepping == {job_id}}


def test_jobs_waiting_in_the_one_by_one_fallback_keep_their_leases(tmp_path: Path) -> None:
    moves, model, ids, outcome = run_batch(tmp_path, {"batch": RuntimeError("boom")})
    assert outcome == "succeeded" and set(moves.outcomes().values()) == {"succeeded"}
    assert model.calls == ["batch", "job 1", "job 2", "job 3"]
    first, second, third = ids
    # Each beat of a job running alone renewed the leases of those still waiting.
    assert held_while_running(moves, first) == {frozenset(ids)}
    assert held_while_running(moves, second) == {frozenset({second, third})}
    assert held_while_running(moves, third) == {frozenset({third})}
    # So did the beats between phases (decode, store) that write no progress.
    assert frozenset(ids) in {b.renewed for b in moves.beats if not b.stepping}


def test_jobs_waiting_while_one_retries_its_decode_in_fp32_keep_their_leases(
    tmp_path: Path,
) -> None:
    moves, model, ids, outcome = run_batch(tmp_path, {"batch": "black", "job 1": "black"})
    assert set(moves.outcomes().values()) == {"succeeded"}
    assert model.calls == ["batch", "job 1", "job 1 fp32"]
    # The first job's image came out black: alone, then decoded in float32 as the others,
    # already made, waited to be stored.
    assert held_while_running(moves, ids[0]) == {frozenset(ids)}


@pytest.mark.parametrize("lost", ["canceled", "taken over"])
def test_a_waiting_job_that_is_no_longer_ours_is_not_run(tmp_path: Path, lost: str) -> None:
    script: dict[str, Any] = {"batch": RuntimeError("boom")}
    moves, model = Moves(), Model(script)
    records = [job(seed) for seed in (1, 2)]
    moves.records = {r.id: r for r in records}

    class Interrupting(Model):
        def txt2img(self, params: Any, on_step: Any, **kwargs: Any) -> Any:
            if params.prompt == "job 1":  # meanwhile, the waiting job is lost
                update = (
                    {"status": JobStatus.CANCELED} if lost == "canceled" else {"worker": "other"}
                )
                moves._move(records[1], **update)
            return super().txt2img(params, on_step, **kwargs)

    model = Interrupting(script)
    context = batch_context(tmp_path, moves, model, records)
    assert execute(context, records[0].id) == "succeeded"
    assert model.calls == ["batch", "job 1"]
    assert moves.records[records[1].id].status is not JobStatus.SUCCEEDED


def test_a_job_its_model_cannot_run_fails_before_any_pipeline_call(tmp_path: Path) -> None:
    """A job that reached the worker without the API's checks (a catalogue changed while it
    waited): the worker checks it against its own catalogue first."""
    catalog = Catalog.model_validate(
        {"models": [{"id": "m", "source": "/m", "family": "sd1", "schedulers": ["euler", "pndm"]}]}
    )
    moves, model = Moves(), Model({})
    fits = job(1)
    few_steps = job(2).model_copy(
        update={"params": fits.params.model_copy(update={"scheduler": "pndm", "steps": 2})}
    )  # type: ignore[union-attr]
    unknown = job(3).model_copy(
        update={"params": fits.params.model_copy(update={"scheduler": "ddim"})}
    )  # type: ignore[union-attr]
    moves.records = {r.id: r for r in (fits, few_steps, unknown)}
    context = WorkerContext(
        name="w",
        lifecycle=moves,  # type: ignore[arg-type]
        storage=LocalStorage(tmp_path, b"k" * 32),
        models={"m": model},
        catalog=catalog,
    )
    outcomes = [execute(context, r.id) for r in (fits, few_steps, unknown)]
    assert outcomes == ["succeeded", "invalid_input", "invalid_input"]
    assert model.calls == ["job 1"]
    failed = moves.records[few_steps.id].error
    assert failed is not None and "needs at least 4 denoising steps" in failed.message
    failed = moves.records[unknown.id].error
    assert failed is not None and "'ddim' is not available for model m" in failed.message
