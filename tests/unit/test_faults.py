"""GPU faults a job can recover from, injected on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.errors import FailureCode
from jobs.protocol import AnyParams, parse_params
from worker.faults import (
    JobFailed,
    WorkerBroken,
    is_blank,
    is_device_broken,
    is_out_of_memory,
    run_with_fault_handling,
)


class FakeModel:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


def params(n: int = 3, seed: int = 10) -> AnyParams:
    return parse_params({"type": "txt2img", "prompt": "x", "n": n, "seed": seed, "steps": 2})


def picture(seed: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (seed % 256, 1, 1))


BLACK = Image.new("RGB", (8, 8), (0, 0, 0))


class Script:
    """A pipeline call that follows a script of outcomes, recording its calls."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[list[int], bool]] = []

    def __call__(self, part: AnyParams, decode_fp32: bool) -> list[Image.Image]:
        self.calls.append((part.seeds(), decode_fp32))
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "black":
            return [BLACK for _ in part.seeds()]
        return [picture(seed) for seed in part.seeds()]


def oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_runs_the_images_one_by_one() -> None:
    model, run = FakeModel(), Script(oom())
    outputs = run_with_fault_handling(model, params(n=3), run)
    assert model.released == 1
    assert run.calls == [([10, 11, 12], False), ([10], False), ([11], False), ([12], False)]
    assert [o.getpixel((0, 0))[0] for o in outputs] == [10, 11, 12]


def test_out_of_memory_twice_fails_the_job() -> None:
    model = FakeModel()
    with pytest.raises(JobFailed) as info:
        run_with_fault_handling(model, params(n=2), Script(oom(), "ok", oom()))
    assert info.value.code is FailureCode.OUT_OF_MEMORY and model.released == 2


def test_out_of_memory_with_one_image_fails_at_once() -> None:
    run = Script(oom())
    with pytest.raises(JobFailed) as info:
        run_with_fault_handling(FakeModel(), params(n=1), run)
    assert info.value.code is FailureCode.OUT_OF_MEMORY and len(run.calls) == 1


def test_black_output_is_decoded_again_in_float32() -> None:
    run = Script("black", "ok")
    outputs = run_with_fault_handling(FakeModel(), params(n=2), run)
    assert run.calls == [([10, 11], False), ([10, 11], True)]
    assert not any(is_blank(o) for o in outputs)


def test_black_twice_fails_as_invalid_output() -> None:
    with pytest.raises(JobFailed) as info:
        run_with_fault_handling(FakeModel(), params(n=1), Script("black", "black"))
    assert info.value.code is FailureCode.INVALID_OUTPUT


def test_other_cuda_errors_break_the_worker() -> None:
    error = RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(WorkerBroken):
        run_with_fault_handling(FakeModel(), params(), Script(error))


def test_other_errors_pass_through() -> None:
    with pytest.raises(ValueError, match="bad"):
        run_with_fault_handling(FakeModel(), params(), Script(ValueError("bad")))


def test_classifiers() -> None:
    assert is_out_of_memory(oom()) and not is_device_broken(ValueError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert is_device_broken(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_blank(BLACK) and not is_blank(picture(1))
    assert is_blank(Image.new("L", (4, 4), 0))
    assert not is_blank(Image.new("RGB", (4, 4), (1, 0, 0)))  # dark is not black


def test_decoding_in_float32_gives_the_same_image(tiny_model: Path) -> None:
    from jobs.catalog import ModelEntry
    from worker.pipelines import WarmModel
    from worker.runtime import pick_device

    entry = ModelEntry(id="tiny", source=str(tiny_model), family="sd1")
    model = WarmModel(entry, tiny_model, pick_device("cpu", "auto"))
    job = parse_params(
        {
            "type": "txt2img",
            "prompt": "x",
            "steps": 2,
            "seed": 3,
            "width": 64,
            "height": 64,
            "scheduler": "euler",
            "guidance_scale": 5.0,
        }
    )
    plain = np.asarray(model.txt2img(job, lambda step, total: None)[0]).astype(int)
    fp32 = np.asarray(model.txt2img(job, lambda step, total: None, decode_fp32=True)[0])
    assert np.abs(plain - fp32.astype(int)).max() <= 1
