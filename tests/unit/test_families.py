"""Every task of every model family on its tiny random-weight model, through the classes the
worker holds (`WarmModel`, `WarmVideoModel`): sizes, seeds, shared weights, float32 decodes.

Each tiny model is built once per module and loaded once; runs are 64-80 pixels, 2 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from jobs.catalog import ModelEntry
from jobs.families import FAMILIES, FAMILY_RULES
from jobs.protocol import Padding, parse_params
from worker.imaging import inpaint_canvas, outpaint_canvas

IMAGE_FAMILIES = tuple(f for f in FAMILIES if f != "video")


def doing(task: str) -> tuple[str, ...]:
    """The families with a pipeline for `task`."""
    return tuple(f for f in FAMILIES if task in FAMILY_RULES[f].tasks)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    # Runs this small gain nothing from a second thread, and on a busy CPU its OpenMP
    # workers spin waiting for each other (ten times slower, seen here).
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from worker.demo_model import build

    root = tmp_path_factory.mktemp("families")
    return {family: build(family, root / family) for family in FAMILIES}


def entry_of(family: str, path: Path) -> ModelEntry:
    return ModelEntry(id=f"tiny-{family}", source=str(path), family=family)


@pytest.fixture(scope="module")
def model(tiny_dirs: dict[str, Path]) -> Callable[[str], Any]:
    """The loaded tiny model of a family (loaded once per module)."""
    from worker.pipelines import load_model

    loaded: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in loaded:
            path = tiny_dirs[family]
            loaded[family] = load_model(entry_of(family, path), path, "cpu")
        return loaded[family]

    return get


def job(family: str, job_type: str, **fields: Any) -> Any:
    rules = FAMILY_RULES[family]
    data: dict[str, Any] = {
        "type": job_type,
        "prompt": "a red fox",
        "negative_prompt": "",
        "steps": 2,
        "guidance_scale": rules.default_guidance,
        "scheduler": rules.default_schedulers[0],
        "seed": 7,
        "n": 2,
    }
    if job_type in ("txt2img", "txt2video"):
        data.update(width=72, height=64)
    if job_type == "txt2video":
        data.update(num_frames=6, fps=8)
    return parse_params({**data, **fields})


class Steps:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, step: int, total: int) -> None:
        self.calls.append((step, total))


def pixels(image: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image.convert("RGB")).astype(int)


def assert_seeded(first: list[Image.Image], again: list[Image.Image]) -> None:
    """The same seeds give the same pixels; the two seeds of a job give different ones."""
    assert [pixels(i).tolist() for i in first] == [pixels(i).tolist() for i in again]
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))


def source_image() -> Image.Image:
    ramp = np.linspace(0, 255, 72 * 64 * 3).reshape(64, 72, 3).astype(np.uint8)
    return Image.fromarray(ramp, "RGB")


# -- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_gives_the_class_of_the_family(family: str, model: Any) -> None:
    from worker.pipelines import WarmModel, WarmVideoModel

    loaded = model(family)
    assert isinstance(loaded, WarmVideoModel if family == "video" else WarmModel)
    config = loaded.config
    assert config["family"] == family and config["device"] == "cpu"
    assert config["dtype"] == "float32" and config["attention"] == "sdpa"
    assert not config["channels_last"] and not config["compile"] and not config["vae_upcast"]
    assert config["load_s"] > 0 and config["vae_tiling_pixels"] > 0


@pytest.mark.parametrize("family", doing("inpaint"))
def test_derived_pipelines_share_the_base_weights(family: str, model: Any) -> None:
    loaded = model(family)
    base = loaded.base
    denoiser = base.unet if family in ("sd1", "sdxl") else base.transformer
    for derived in (loaded.restyler, loaded.inpainter):
        assert derived is not None and derived is not base
        same = derived.unet if family in ("sd1", "sdxl") else derived.transformer
        assert same is denoiser
        assert derived.vae is base.vae and derived.text_encoder is base.text_encoder


# -- image tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_txt2img(family: str, model: Any) -> None:
    loaded = model(family)
    params = job(family, "txt2img")
    steps = Steps()
    first = loaded.txt2img(params, steps)
    # 72 is no multiple of 16: SD3 and Flux run at 80 and come back at the size asked for.
    assert [image.size for image in first] == [(72, 64)] * 2
    assert steps.calls[-1] == (2, 2)
    assert_seeded(first, loaded.txt2img(params, Steps()))


@pytest.mark.parametrize("family", doing("img2img"))
def test_img2img(family: str, model: Any) -> None:
    loaded = model(family)
    params = job(family, "img2img", strength=0.5, steps=4)
    first = loaded.img2img(params, source_image(), Steps())
    # The run's size; the runner brings it back to the input's.
    assert [image.size for image in first] == [loaded._run_size(72, 64)] * 2
    assert_seeded(first, loaded.img2img(params, source_image(), Steps()))


@pytest.mark.parametrize("family", doing("inpaint"))
def test_inpaint_and_outpaint(family: str, model: Any) -> None:
    loaded = model(family)
    mask = Image.new("L", (72, 64), 0)
    mask.paste(255, (16, 16, 48, 40))
    pad = Padding(left=16, bottom=8)
    runs = [
        (job(family, "inpaint"), inpaint_canvas(source_image(), mask, 4)),
        (
            job(family, "outpaint", outpaint=pad.model_dump()),
            outpaint_canvas(source_image(), pad, 4),
        ),
    ]
    for params, canvas in runs:
        first = loaded.inpaint(params, canvas, Steps())
        assert [image.size for image in first] == [loaded._run_size(*canvas.image.size)] * 2
        assert_seeded(first, loaded.inpaint(params, canvas, Steps()))


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_decoding_in_float32_gives_the_same_images(family: str, model: Any) -> None:
    loaded = model(family)
    params = job(family, "txt2img", n=1)
    plain = loaded.txt2img(params, Steps())
    again = loaded.txt2img(params, Steps(), decode_fp32=True)
    assert np.abs(pixels(plain[0]) - pixels(again[0])).max() <= 1
    if family not in doing("img2img"):
        return
    image_params = job(family, "img2img", n=1, strength=0.5, steps=4)
    plain = loaded.img2img(image_params, source_image(), Steps())
    again = loaded.img2img(image_params, source_image(), Steps(), decode_fp32=True)
    assert np.abs(pixels(plain[0]) - pixels(again[0])).max() <= 1


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_several_jobs_in_one_call(family: str, model: Any) -> None:
    loaded = model(family)
    params = job(family, "txt2img", n=1)
    images = loaded.txt2img(
        params,
        Steps(),
        prompts=["a red fox", "a blue whale"],
        negative_prompts=["", "blurry"],
        seeds=[7, 8],
    )
    assert [image.size for image in images] == [(72, 64)] * 2


@pytest.mark.parametrize(
    ("family", "scheduler"),
    [(family, name) for family in FAMILIES for name in FAMILY_RULES[family].schedulers],
)
def test_every_scheduler_a_family_accepts_runs(family: str, scheduler: str, model: Any) -> None:
    loaded = model(family)
    if family == "video":
        params = job(family, "txt2video", n=1, num_frames=1, scheduler=scheduler)
        assert len(loaded.txt2video(params, Steps())[0]) == 1
    else:
        # PNDM cannot run fewer than 4 steps.
        params = job(family, "txt2img", n=1, scheduler=scheduler, steps=4)
        assert loaded.txt2img(params, Steps())[0].size == (72, 64)


def test_a_step_callback_that_raises_stops_the_job(model: Any) -> None:
    class Stop(Exception):
        pass

    def stop(step: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        model("flux").txt2img(job("flux", "txt2img"), stop)
    with pytest.raises(Stop):
        model("video").txt2video(job("video", "txt2video"), stop)


# -- video ---------------------------------------------------------------------------------


def test_txt2video(model: Any) -> None:
    loaded = model("video")
    params = job("video", "txt2video")
    steps = Steps()
    first = loaded.txt2video(params, steps)
    # 6 frames asked: Wan runs 9 (4k+1) and the extra ones are dropped; 72 wide runs at 80.
    assert [len(video) for video in first] == [6, 6]
    assert {frame.size for video in first for frame in video} == {(72, 64)}
    assert steps.calls[-1] == (2, 2)
    again = loaded.txt2video(params, Steps())
    assert [[pixels(f).tolist() for f in v] for v in first] == [
        [pixels(f).tolist() for f in v] for v in again
    ]
    assert not np.array_equal(pixels(first[0][0]), pixels(first[1][0]))
    fp32 = loaded.txt2video(params, Steps(), decode_fp32=True)
    assert np.abs(pixels(first[0][5]) - pixels(fp32[0][5])).max() <= 1


def test_video_frame_counts(model: Any) -> None:
    loaded = model("video")
    assert [loaded.run_frames(n) for n in (1, 2, 5, 6, 8, 9, 33, 80)] == [
        1,
        5,
        5,
        9,
        9,
        9,
        33,
        81,
    ]


def test_the_worker_builds_a_missing_demo_model_of_its_family(tmp_path: Path) -> None:
    from jobs.catalog import load_catalog
    from worker.main import model_source

    catalog_file = tmp_path / "models.toml"
    catalog_file.write_text(
        '[[models]]\nid = "f"\nsource = "models/f"\nfamily = "flux"\ndemo = true\n'
    )
    catalog = load_catalog(catalog_file)
    source = model_source(catalog, catalog.by_id["f"])
    index = (Path(source) / "model_index.json").read_text()
    assert '"FluxPipeline"' in index
