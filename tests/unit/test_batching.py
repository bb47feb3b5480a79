"""Which jobs may share a pipeline call (the rest is tested against a real worker)."""

from __future__ import annotations

from typing import Any

from jobs.batching import batch_key, job_id_of
from jobs.protocol import parse_params

BASE = {
    "type": "txt2img",
    "model": "m",
    "prompt": "a cat",
    "width": 64,
    "height": 64,
    "steps": 4,
    "scheduler": "euler",
    "guidance_scale": 7.5,
    "seed": 1,
}


def key(**changes: Any) -> object:
    return batch_key(parse_params({**BASE, **changes}))


def test_prompts_seeds_counts_and_formats_do_not_matter() -> None:
    same = key(prompt="a dog", negative_prompt="blur", seed=9, n=3, output_format="webp")
    assert same == key()
    assert same is not None


def test_size_steps_scheduler_guidance_and_model_do() -> None:
    for change in (
        {"width": 72},
        {"height": 72},
        {"steps": 5},
        {"scheduler": "ddim"},
        {"guidance_scale": 7.0},
        {"model": "other"},
    ):
        assert key(**change) != key(), change


def test_only_txt2img_is_batched() -> None:
    video = {k: v for k, v in BASE.items()}
    video["type"] = "txt2video"
    assert batch_key(parse_params(video)) is None
    restyle = {**{k: v for k, v in BASE.items() if k not in ("width", "height")}}
    restyle["type"] = "img2img"
    assert batch_key(parse_params(restyle)) is None


def test_rq_ids_lead_back_to_their_job() -> None:
    job = "j_" + "a" * 22
    assert job_id_of(job) == job
    assert job_id_of(f"{job}-r0a1b2c3d") == job
    # Job ids may contain "-r" themselves.
    with_dash = "j_abc-rdef" + "x" * 14
    assert job_id_of(with_dash) == with_dash
    assert job_id_of(f"{with_dash}-r00ff00ff") == with_dash
