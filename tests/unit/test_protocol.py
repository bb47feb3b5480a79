"""Validation of job parameters: every limit of API.md."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobs import defaults
from jobs.protocol import (
    InpaintParams,
    JobStatus,
    OutpaintParams,
    Txt2ImgParams,
    is_job_id,
    new_job_id,
    parse_params,
)

BASE = {"type": "txt2img", "prompt": "a lighthouse at dusk"}


def params(**fields: Any) -> Any:
    return parse_params({**BASE, **fields})


def test_minimal_txt2img_takes_defaults() -> None:
    p = params()
    assert isinstance(p, Txt2ImgParams)
    assert p.width is None and p.steps is None and p.seed is None
    assert p.n == 1 and p.output_format == "png" and p.priority == "normal"


def test_prompt_is_trimmed() -> None:
    assert params(prompt="  spaced  ").prompt == "spaced"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_prompts_that_are_not_text_are_refused_at_submit(field: str) -> None:
    """A lone surrogate is valid JSON (`"\\ud83e"`) but no text: it cannot be encoded, so
    the output's metadata (or the tokenizer) would fail after the GPU work."""
    with pytest.raises(ValidationError) as info:
        params(**{field: "a fox \ud83e"})
    assert info.value.errors()[0]["loc"] == (field,)
    assert params(**{field: "a fox \U0001f98a"})  # the whole character is fine


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ""),
        ("prompt", "   \n\t "),
        ("prompt", "x" * (defaults.PROMPT_MAX_CHARS + 1)),
        ("width", 63 - 7),
        ("width", 100),
        ("width", 2056),
        ("height", 0),
        ("height", -64),
        ("height", 65),
        ("steps", 0),
        ("steps", 151),
        ("steps", 2.5),
        ("guidance_scale", -0.1),
        ("guidance_scale", 30.01),
        ("seed", -1),
        ("seed", 2**32),
        ("n", 0),
        ("n", 9),
        ("output_format", "gif"),
        ("priority", "urgent"),
        ("scheduler", ""),
        ("model", ""),
        ("unknown_field", 1),
    ],
)
def test_out_of_range_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        params(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "x" * defaults.PROMPT_MAX_CHARS),
        ("width", 64),
        ("width", 2048),
        ("steps", 1),
        ("steps", 150),
        ("guidance_scale", 0),
        ("guidance_scale", 30),
        ("seed", 0),
        ("seed", 2**32 - 1),
        ("n", 8),
    ],
)
def test_limits_are_inclusive(field: str, value: Any) -> None:
    assert getattr(params(**{field: value}), field) == value


@pytest.mark.parametrize("job_type", [None, "img2video", 3])
def test_type_is_required_and_known(job_type: Any) -> None:
    with pytest.raises(ValueError, match="type is required"):
        parse_params({"type": job_type, "prompt": "x"})


def test_txt2img_fields_are_refused_on_inpaint() -> None:
    with pytest.raises(ValidationError) as info:
        parse_params({"type": "inpaint", "prompt": "x", "width": 64})
    assert info.value.errors()[0]["loc"] == ("width",)


def test_inpaint_strength_and_blur_limits() -> None:
    ok = parse_params({"type": "inpaint", "prompt": "x", "strength": 0.5, "mask_blur": 64})
    assert isinstance(ok, InpaintParams)
    for bad in ({"strength": 1.5}, {"strength": -0.1}, {"mask_blur": 65}, {"mask_blur": -1}):
        with pytest.raises(ValidationError):
            parse_params({"type": "inpaint", "prompt": "x", **bad})


def test_strength_that_leaves_no_step_is_refused() -> None:
    with pytest.raises(ValidationError, match="no denoising step"):
        parse_params({"type": "inpaint", "prompt": "x", "steps": 4, "strength": 0.2})
    assert parse_params({"type": "inpaint", "prompt": "x", "steps": 4, "strength": 0.25})


def test_outpaint_needs_some_padding() -> None:
    with pytest.raises(ValidationError):
        parse_params({"type": "outpaint", "prompt": "x"})
    with pytest.raises(ValidationError, match="at least one"):
        parse_params({"type": "outpaint", "prompt": "x", "outpaint": {"left": 0}})
    with pytest.raises(ValidationError):
        parse_params({"type": "outpaint", "prompt": "x", "outpaint": {"left": -8}})
    with pytest.raises(ValidationError):
        parse_params({"type": "outpaint", "prompt": "x", "outpaint": {"middle": 8}})
    p = parse_params({"type": "outpaint", "prompt": "x", "outpaint": {"right": 64}})
    assert isinstance(p, OutpaintParams) and p.outpaint.right == 64 and p.outpaint.left == 0


def test_seeds_are_consecutive_and_wrap() -> None:
    assert params(seed=7, n=3).seeds() == [7, 8, 9]
    assert params(seed=2**32 - 1, n=2).seeds() == [2**32 - 1, 0]


def test_statuses() -> None:
    assert not JobStatus.QUEUED.is_terminal() and not JobStatus.RUNNING.is_terminal()
    assert all(s.is_terminal() for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED))


def test_job_ids() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100 and all(is_job_id(i) for i in ids)
    for bad in ("", "j_", "j_../../etc/passwd", "x_" + "a" * 22, "j_" + "a" * 21 + "/"):
        assert not is_job_id(bad)


def test_img2img_takes_an_image_and_a_strength_only() -> None:
    from jobs.protocol import Img2ImgParams

    p = parse_params({"type": "img2img", "prompt": "x"})
    assert isinstance(p, Img2ImgParams) and p.strength == 0.75
    for bad in ({"mask_blur": 4}, {"width": 64}, {"strength": 1.1}, {"outpaint": {"left": 8}}):
        with pytest.raises(ValidationError):
            parse_params({"type": "img2img", "prompt": "x", **bad})
