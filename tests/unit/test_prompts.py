"""Chunked prompt encoding for SD 1.x and SDXL, against the pipelines' own encode_prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.tiny_pipelines import load, model_dir, run
from worker.families import family_of
from worker.prompts import CHUNK_TOKENS, chunk_count, parse_emphasis

# 200 tokens with the tiny CLIP vocabulary: "w" and a digit, each a token.
LONG = " ".join(f"w{i % 10}" for i in range(100))


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def family_pipe(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Any]:
    family: str = request.param
    return family, load(model_dir(family, tmp_path_factory))


def _reference(
    pipe: Any, family: str, prompts: list[str], negative: str | None
) -> dict[str, torch.Tensor]:
    negatives = None if negative is None else [negative] * len(prompts)
    with torch.inference_mode():
        if family == "sd1":
            embeds = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=negatives)
            names = ["prompt_embeds", "negative_prompt_embeds"]
        else:
            embeds = pipe.encode_prompt(
                prompts,
                device="cpu",
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=negatives,
            )
            names = [
                "prompt_embeds",
                "negative_prompt_embeds",
                "pooled_prompt_embeds",
                "negative_pooled_prompt_embeds",
            ]
    return dict(zip(names, embeds, strict=True))


def _encode(
    pipe: Any, family: str, prompts: list[str], negatives: list[str | None], **kw: Any
) -> dict[str, torch.Tensor]:
    kw.setdefault("guidance_scale", 7.5)
    with torch.inference_mode():
        return family_of(family).encode_prompts(pipe, prompts, negatives, "cpu", **kw)


@pytest.mark.parametrize("negative", [None, "", "blurry, low quality"])
def test_a_short_prompt_gives_the_pipelines_own_embeddings(
    family_pipe: tuple[str, Any], negative: str | None
) -> None:
    family, pipe = family_pipe
    prompts = ["a cat on the mat", "the dog"]
    mine = _encode(pipe, family, prompts, [negative] * 2)
    reference = _reference(pipe, family, prompts, negative)
    assert mine.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(mine[name], tensor), name
    if family == "sdxl" and negative is None:
        # force_zeros_for_empty_prompt: no negative prompt is zeros, as in the pipeline.
        assert not mine["negative_prompt_embeds"].any()


def test_a_long_prompt_is_encoded_in_chunks(family_pipe: tuple[str, Any]) -> None:
    family, pipe = family_pipe
    assert len(pipe.tokenizer(LONG, add_special_tokens=False).input_ids) == 200
    assert chunk_count(pipe, LONG) == 3
    embeds = _encode(pipe, family, [LONG], ["blurry"])
    width = 32 if family == "sd1" else 64
    assert embeds["prompt_embeds"].shape == (1, 3 * (CHUNK_TOKENS + 2), width) == (1, 231, width)
    # The negative prompt is padded with empty chunks to the positive's length.
    assert embeds["negative_prompt_embeds"].shape == embeds["prompt_embeds"].shape
    if family == "sdxl":
        assert embeds["pooled_prompt_embeds"].shape == (1, 32)
        assert embeds["negative_pooled_prompt_embeds"].shape == (1, 32)
    # A long negative prompt lengthens the positive one the same way.
    embeds = _encode(pipe, family, ["a cat"], [LONG])
    assert embeds["prompt_embeds"].shape[1] == embeds["negative_prompt_embeds"].shape[1] == 231


def test_the_first_chunk_is_what_the_pipeline_makes_of_the_cut_prompt(
    family_pipe: tuple[str, Any],
) -> None:
    family, pipe = family_pipe
    chunked = _encode(pipe, family, [LONG], [None])
    cut = _reference(pipe, family, [LONG], None)
    assert torch.equal(chunked["prompt_embeds"][:, :77], cut["prompt_embeds"])
    assert not torch.equal(chunked["prompt_embeds"][:, 77:154], cut["prompt_embeds"])
    if family == "sdxl":
        assert torch.equal(chunked["pooled_prompt_embeds"], cut["pooled_prompt_embeds"])


def test_a_long_prompt_makes_a_different_image_than_the_cut_one(
    family_pipe: tuple[str, Any],
) -> None:
    family, pipe = family_pipe
    # The pipeline cuts the prompt at 77 tokens (75 of text) itself.
    truncated = run(pipe, prompt=LONG, guidance_scale=7.5)
    chunked = run(pipe, guidance_scale=7.5, **_encode(pipe, family, [LONG], [None]))
    assert np.abs(chunked - truncated).max() > 0.01
    # ... while a short prompt through `encode` makes the pipeline's image exactly.
    assert np.array_equal(
        run(pipe, guidance_scale=7.5, **_encode(pipe, family, ["a cat"], [None])),
        run(pipe, prompt="a cat", guidance_scale=7.5),
    )


def test_a_batch_of_different_prompts(family_pipe: tuple[str, Any]) -> None:
    family, pipe = family_pipe
    prompts = ["a cat", LONG, "the dog"]
    embeds = _encode(pipe, family, prompts, ["blurry", None, "dark"])
    for tensor in embeds.values():
        assert tensor.shape[0] == 3
    assert embeds["prompt_embeds"].shape[1] == embeds["negative_prompt_embeds"].shape[1] == 231
    # Each row is its prompt's own encoding (padded with empty chunks to the batch's length).
    alone = _encode(pipe, family, ["the dog"], ["dark"])
    assert torch.allclose(embeds["prompt_embeds"][2, :77], alone["prompt_embeds"][0], atol=1e-5)
    images = run(pipe, guidance_scale=7.5, num_images_per_prompt=2, **embeds)
    assert images.shape[0] == 6


def test_no_negative_embeddings_without_guidance(family_pipe: tuple[str, Any]) -> None:
    family, pipe = family_pipe
    embeds = _encode(pipe, family, ["a cat"], ["blurry"], guidance_scale=1.0)
    assert not any(name.startswith("negative") for name in embeds)
    assert np.array_equal(
        run(pipe, guidance_scale=1.0, **embeds), run(pipe, prompt="a cat", guidance_scale=1.0)
    )


def test_wrong_arguments_are_refused(family_pipe: tuple[str, Any]) -> None:
    family, pipe = family_pipe
    with pytest.raises(ValueError, match="negative"):
        _encode(pipe, family, ["a", "b"], [None])
    with pytest.raises(ValueError, match="no prompt"):
        _encode(pipe, family, [], [])
    with pytest.raises(ValueError, match="flux"):
        _encode(pipe, "flux", ["a"], [None])


# -- emphasis -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("a red cat", [("a red cat", 1.0)]),
        ("a (red:1.3) cat", [("a ", 1.0), ("red", 1.3), (" cat", 1.0)]),
        ("(red) [blue]", [("red", 1.1), (" ", 1.0), ("blue", 1 / 1.1)]),
        ("((big))", [("big", pytest.approx(1.21))]),
        ("((big:2)) cat", [("big", pytest.approx(2.2)), (" cat", 1.0)]),
        ("\\(literal\\) x", [("(literal) x", 1.0)]),
        ("open (end", [("open ", 1.0), ("end", 1.1)]),
        ("stray) x", [("stray) x", 1.0)]),
        ("(a:b) c", [("a:b", 1.1), (" c", 1.0)]),
        ("ratio 16:9", [("ratio 16:9", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_emphasis(text: str, pieces: list[tuple[str, Any]]) -> None:
    assert parse_emphasis(text) == pieces


def test_weighting_is_opt_in(family_pipe: tuple[str, Any]) -> None:
    family, pipe = family_pipe
    plain = _encode(pipe, family, ["a red cat"], [None], guidance_scale=1.0)
    same = _encode(pipe, family, ["a red cat"], [None], guidance_scale=1.0, weighting=True)
    weighted = _encode(
        pipe, family, ["a (red:1.3) cat"], [None], guidance_scale=1.0, weighting=True
    )
    literal = _encode(pipe, family, ["a (red:1.3) cat"], [None], guidance_scale=1.0)
    assert torch.equal(same["prompt_embeds"], plain["prompt_embeds"])
    assert weighted["prompt_embeds"].shape == plain["prompt_embeds"].shape
    assert not torch.allclose(weighted["prompt_embeds"], plain["prompt_embeds"])
    # Without weighting the brackets are text, as the pipeline reads them.
    reference = _reference(pipe, family, ["a (red:1.3) cat"], None)
    assert torch.equal(literal["prompt_embeds"], reference["prompt_embeds"])


# -- limits ---------------------------------------------------------------------------------


def test_token_limits() -> None:
    assert family_of("sd1").token_limit is None
    assert family_of("sdxl").token_limit is None
    assert family_of("sd3").token_limit == 256
    assert family_of("flux").token_limit == 512
    with pytest.raises(ValueError, match="unknown"):
        family_of("sd9")


def test_token_limits_match_the_pipelines_defaults() -> None:
    import inspect

    from diffusers import ChromaPipeline, FluxPipeline, StableDiffusion3Pipeline, WanPipeline

    for family, pipeline in (
        ("sd3", StableDiffusion3Pipeline),
        ("flux", FluxPipeline),
        ("chroma", ChromaPipeline),
        ("video", WanPipeline),
    ):
        default = inspect.signature(pipeline.__call__).parameters["max_sequence_length"].default
        assert family_of(family).token_limit == default


def test_chunk_count_counts_weighted_text_without_brackets(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    pipe = load(model_dir("sd1", tmp_path_factory))
    assert chunk_count(pipe, "") == 1
    assert chunk_count(pipe, " ".join(["w1"] * 37)) == 1  # 74 tokens
    assert chunk_count(pipe, " ".join(["w1"] * 38)) == 2  # 76 tokens
    bracketed = "(" * 10 + " ".join(["w1"] * 37) + ")" * 10
    assert chunk_count(pipe, bracketed) == 2
    assert chunk_count(pipe, bracketed, weighting=True) == 1


# -- with the rest of a job -----------------------------------------------------------------


def test_derived_pipelines_take_the_embeddings(family_pipe: tuple[str, Any]) -> None:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
    from PIL import Image

    family, pipe = family_pipe
    image = Image.new("RGB", (64, 64), (90, 140, 30))
    mask = Image.new("L", (64, 64), 255)
    embeds = _encode(pipe, family, ["a cat"], ["blurry"])
    for derived, extra in (
        (AutoPipelineForImage2Image.from_pipe(pipe), {"image": image, "strength": 0.8}),
        (AutoPipelineForInpainting.from_pipe(pipe), {"image": image, "mask_image": mask}),
    ):
        derived.set_progress_bar_config(disable=True)
        by_text = run(derived, prompt="a cat", negative_prompt="blurry", **extra)
        assert np.array_equal(run(derived, **embeds, **extra), by_text)
        long = run(derived, **_encode(pipe, family, [LONG], [None]), **extra)
        assert np.abs(long - run(derived, prompt=LONG, **extra)).max() > 0.01


def test_text_encoder_adapters_act_through_encode(
    family_pipe: tuple[str, Any], tmp_path: Path
) -> None:
    from worker.adapters import activate, build_tiny_lora, load_adapters

    family, base_pipe = family_pipe
    pipe = load(base_pipe.name_or_path)
    lora = build_tiny_lora(pipe, tmp_path / "te.safetensors", seed=5, text_encoders=True)
    load_adapters(pipe, [("words", lora)])
    plain = _encode(pipe, family, ["a cat"], [None])
    activate(pipe, [("words", 1.0)])
    adapted = _encode(pipe, family, ["a cat"], [None])
    reference = _reference(pipe, family, ["a cat"], None)
    assert torch.equal(adapted["prompt_embeds"], reference["prompt_embeds"])
    assert not torch.equal(adapted["prompt_embeds"], plain["prompt_embeds"])
    activate(pipe, [])
    assert torch.equal(
        _encode(pipe, family, ["a cat"], [None])["prompt_embeds"], plain["prompt_embeds"]
    )
