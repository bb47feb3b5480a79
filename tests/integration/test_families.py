"""Every task of every model family over HTTP, against a real worker holding one tiny model of
each family; LoRA adapters per job; long prompts; videos that decode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from jobs.families import FAMILIES, FAMILY_RULES
from tests.images import noise_image, png_b64
from tests.integration.helpers import fetch, pixels, run
from tests.integration.services import own_service

pytestmark = pytest.mark.integration

IMAGE_FAMILIES = tuple(f for f in FAMILIES if f != "video")


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One worker with a tiny model of every family (and a tiny LoRA for sd1 and sdxl)."""
    workdir = tmp_path_factory.mktemp("families")
    lines = ['default = "tiny-sd1"']
    for family in FAMILIES:
        rules = FAMILY_RULES[family]
        lines += [
            "[[models]]",
            f'id = "tiny-{family}"',
            f'source = "{workdir}/models/{family}"',
            "demo = true",
            f'family = "{family}"',
            "native_size = [64, 64]",
            "default_steps = 2",
            f"schedulers = {list(rules.default_schedulers)!r}".replace("'", '"'),
        ]
        if family == "video":
            lines += ["default_frames = 5", "max_frames = 9", "default_fps = 4"]
    for family in ("sd1", "sdxl"):
        lines += [
            "[[adapters]]",
            f'id = "ink-{family}"',
            f'source = "{workdir}/adapters/ink-{family}.safetensors"',
            f'families = ["{family}"]',
            f'models = ["tiny-{family}"]',
            "demo = true",
        ]
    catalog = workdir / "models.toml"
    catalog.write_text("\n".join(lines) + "\n")
    with (
        own_service(
            workdir, catalog, "families", "tiny-video", ready_timeout=300, LATENTQ_BATCH_MAX="1"
        ) as svc,
        httpx.Client(base_url=svc.base_url, timeout=60) as client,
    ):
        yield client


def test_models_lists_each_family_with_its_tasks_schedulers_and_runtime(
    families: httpx.Client,
) -> None:
    models = {m["id"]: m for m in families.get("/v1/models").json()["data"]}
    for family in FAMILIES:
        model = models[f"tiny-{family}"]
        assert model["family"] == family
        assert model["tasks"] == list(FAMILY_RULES[family].tasks)
        assert model["schedulers"] == list(FAMILY_RULES[family].default_schedulers)
        assert model["workers"] == 1
        (runtime,) = model["runtime"]
        assert runtime["worker"] == "families" and runtime["device"] == "cpu"
        assert runtime["dtype"] == "float32" and runtime["attention"] == "sdpa"
    assert models["tiny-video"]["max_frames"] == 9
    assert models["tiny-sd1"]["adapters"] == ["ink-sd1"]
    assert models["tiny-sd1"]["runtime"][0]["adapters"] == ["ink-sd1"]


IMAGE = noise_image(80, 64, seed=3)
MASK = Image.new("L", (80, 64))
MASK.paste(255, (16, 8, 48, 40))

TASKS: dict[str, dict[str, Any]] = {
    "txt2img": {"width": 72, "height": 64},
    "img2img": {"image": png_b64(IMAGE), "strength": 0.7},
    "inpaint": {"image": png_b64(IMAGE), "mask": png_b64(MASK)},
    "outpaint": {"image": png_b64(IMAGE), "outpaint": {"left": 16, "bottom": 8}},
}
SIZES = {"txt2img": (72, 64), "img2img": (80, 64), "inpaint": (80, 64), "outpaint": (96, 72)}


@pytest.mark.parametrize(
    ("family", "task"),
    [(f, t) for f in IMAGE_FAMILIES for t in TASKS if t in FAMILY_RULES[f].tasks],
)
def test_every_task_of_every_image_family(families: httpx.Client, family: str, task: str) -> None:
    body = {"type": task, "model": f"tiny-{family}", "prompt": "a red fox", "seed": 5, "n": 2}
    job = run(families, **body, **TASKS[task])
    images = job["result"]["images"]
    assert [i["seed"] for i in images] == [5, 6]
    first, second = pixels(families, job, 0), pixels(families, job, 1)
    assert first.shape[1::-1] == SIZES[task]
    assert np.abs(first - second).mean() > 1, "two seeds gave the same image"
    again = run(families, **body, **TASKS[task])
    assert np.array_equal(pixels(families, again, 1), second), "the same seed, another image"


def test_txt2video_returns_a_playable_mp4_and_an_animated_webp(
    families: httpx.Client, tmp_path: Path
) -> None:
    import imageio.v2 as imageio

    job = run(
        families,
        type="txt2video",
        model="tiny-video",
        prompt="waves",
        width=80,
        height=64,
        num_frames=7,
        fps=6,
        seed=1,
    )
    (video,) = job["result"]["videos"]
    assert (video["width"], video["height"], video["num_frames"], video["fps"]) == (80, 64, 7, 6)
    assert video["content_type"] == "video/mp4"
    response = families.get(video["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    # Decoded by ffmpeg, as a player would.
    path = tmp_path / "video.mp4"
    path.write_bytes(response.content)
    reader = imageio.get_reader(path, format="FFMPEG", mode="I")
    decoded = [frame for frame in reader]
    meta = reader.get_meta_data()
    reader.close()
    assert len(decoded) == 7 and decoded[0].shape == (64, 80, 3)
    assert meta["codec"] == "h264" and meta["fps"] == 6
    webp, _ = fetch(families, video["webp_url"])
    assert webp.format == "WEBP" and webp.n_frames == 7 and webp.size == (80, 64)
    # The default frame count and rate come from the model's entry.
    short = run(families, type="txt2video", model="tiny-video", prompt="rain", seed=2)
    assert short["result"]["videos"][0]["num_frames"] == 5
    assert short["params"]["fps"] == 4


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_lora_job_leaves_the_next_job_on_the_base_model(
    families: httpx.Client, family: str
) -> None:
    body = {"type": "txt2img", "model": f"tiny-{family}", "prompt": "a red fox", "seed": 9}
    before = pixels(families, run(families, **body))
    styled = run(families, **body, loras=[{"id": f"ink-{family}", "scale": 1.0}])
    assert styled["params"]["loras"] == [{"id": f"ink-{family}", "scale": 1.0}]
    assert np.abs(pixels(families, styled) - before).mean() > 1, "the LoRA changed nothing"
    half = run(families, **body, loras=[{"id": f"ink-{family}", "scale": 0.5}])
    assert not np.array_equal(pixels(families, half), pixels(families, styled))
    after = pixels(families, run(families, **body))
    assert np.array_equal(after, before), "the LoRA leaked into the next job"


def test_an_adapter_of_another_model_is_refused(families: httpx.Client) -> None:
    response = families.post(
        "/v1/jobs",
        json={"type": "txt2img", "model": "tiny-sd1", "prompt": "x", "loras": [{"id": "ink-sdxl"}]},
    )
    assert response.status_code == 422
    assert "does not fit" in response.json()["error"]["message"]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_long_prompt_is_not_cut_at_77_tokens(families: httpx.Client, family: str) -> None:
    # "a" and "cat" are one token each in the tiny vocabulary: the first 75 tokens, all a
    # truncating encoder keeps, then 128 more that say something else (203 in all).
    first_75 = " ".join(("a cat " * 38).split()[:75])
    long = first_75 + " on the mat" * 32
    body = {"type": "txt2img", "model": f"tiny-{family}", "seed": 3}
    whole = pixels(families, run(families, **body, prompt=long))
    cut = pixels(families, run(families, **body, prompt=first_75))
    assert np.abs(whole - cut).mean() > 0.5, "the prompt's tail past 77 tokens was dropped"
