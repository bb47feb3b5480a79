"""The worker's typed view of resolved params: every catalogue default filled, or refused."""

from __future__ import annotations

import pytest

from jobs.protocol import Txt2VideoParams, parse_params
from jobs.resolved import Sampling, Unresolved, frames, size


def resolved_txt2img(**fields: object) -> dict[str, object]:
    return {
        "type": "txt2img",
        "prompt": "a red fox",
        "steps": 4,
        "guidance_scale": 5.0,
        "scheduler": "euler",
        "seed": 41,
        "n": 3,
        "width": 64,
        "height": 72,
        **fields,
    }


def test_sampling_of_resolved_params() -> None:
    params = parse_params(resolved_txt2img(loras=[{"id": "ink", "scale": 0.5}]))
    run = Sampling.of(params)
    assert (run.steps, run.guidance_scale, run.scheduler, run.n) == (4, 5.0, "euler", 3)
    assert run.negative_prompt == "" and [lora.id for lora in run.loras] == ["ink"]
    assert run.seeds() == params.seeds() == [41, 42, 43]
    assert size(params) == (64, 72)  # type: ignore[arg-type]


@pytest.mark.parametrize("unset", ["steps", "guidance_scale", "scheduler", "seed"])
def test_params_that_skipped_resolving_are_refused_by_name(unset: str) -> None:
    data = resolved_txt2img()
    del data[unset]
    with pytest.raises(Unresolved, match=unset):
        Sampling.of(parse_params(data))


def test_size_and_frames_are_refused_when_unset() -> None:
    data = resolved_txt2img()
    del data["width"]
    with pytest.raises(Unresolved, match="size"):
        size(parse_params(data))  # type: ignore[arg-type]
    video = Txt2VideoParams(prompt="waves", width=64, height=64, fps=8)
    with pytest.raises(Unresolved, match="frames"):
        frames(video)
    assert frames(video.model_copy(update={"num_frames": 9})) == (9, 8)
