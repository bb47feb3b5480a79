"""The playground on the shipped catalogue: its default model is the trained shapes model, the
prompt box offers that model's example, and the images it shows are the shapes asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.browser.conftest import open_page
from tests.browser.playground import newest_job, set_brush, snap, stroke, wait_for_loaded_images
from tests.integration.helpers import fetch
from tests.integration.services import Service, shapes_service
from worker.shapes.judge import judge
from worker.shapes.scenes import COLOURS, SIZE

pytestmark = pytest.mark.integration

EXAMPLE = "a red circle on the left on a blue background"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with shapes_service(tmp_path_factory.mktemp("shapes-playground")) as svc:
        yield svc


def test_the_default_model_draws_the_prompt_boxs_example(
    chromium: Any, shapes: Service, artifacts: Path
) -> None:
    context, page, errors = open_page(chromium, shapes.base_url)
    try:
        page.goto("/")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        expect(page.locator("#model")).to_have_value("shapes")
        expect(page.locator("#prompt-hint")).to_contain_text("Colours: red, green, blue")
        expect(page.locator("#prompt")).to_have_attribute("placeholder", EXAMPLE)
        page.fill("#prompt", page.locator("#prompt").get_attribute("placeholder"))
        page.uncheck("#seed-random")
        page.fill("#seed", "0")
        page.fill("#n", "4")
        page.click("#generate")

        job = newest_job(page)
        expect(job).to_have_attribute("data-status", "succeeded")
        job_id = job.get_attribute("data-job-id")
        cards = wait_for_loaded_images(page, job_id, 4)
        assert [c["seed"] for c in cards] == [0, 1, 2, 3]
        snap(page, artifacts, "shapes-red-circle")
        record = httpx.get(f"{shapes.base_url}/v1/jobs/{job_id}", timeout=30).json()
        right = 0
        with httpx.Client(base_url=shapes.base_url, timeout=30) as api:
            for image in record["result"]["images"]:
                picture, _ = fetch(api, image["url"])
                verdict = judge(picture.convert("RGB"))
                main = verdict.shapes[0] if verdict.shapes else None
                right += bool(
                    verdict.background == "blue"
                    and main is not None
                    and (main.colour, main.kind, main.position) == ("red", "circle", "left")
                )
        # Most of the four draw exactly the example (README: the model's measured accuracy).
        assert right >= 2, record["result"]["images"]
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        context.close()


def test_the_inpaint_tab_turns_a_painted_over_shape_into_the_one_asked_for(
    chromium: Any, shapes: Service, artifacts: Path, tmp_path: Path
) -> None:
    """A red circle on the left of a blue picture, painted over with the mouse in the inpaint
    tab, and a yellow square asked for: the judge finds it there, the rest is untouched."""
    scene = Image.new("RGB", (SIZE, SIZE), COLOURS["blue"])
    ImageDraw.Draw(scene).ellipse([6, 20, 30, 44], fill=COLOURS["red"])
    scene.save(tmp_path / "scene.png")
    context, page, errors = open_page(chromium, shapes.base_url)
    try:
        page.goto("/")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        page.click("#tab-inpaint")
        page.set_input_files("#inpaint-file", tmp_path / "scene.png")
        expect(page.locator("#mask-stage")).to_be_visible()
        page.fill("#prompt", "a yellow square on the left on a blue background")
        page.uncheck("#seed-random")
        page.fill("#seed", "3")
        page.fill("#inpaint-blur", "0")
        set_brush(page, 16)
        for y in (18, 26, 34, 42):
            stroke(page, "#mask-paint", [(2, y), (34, y)], SIZE)
        snap(page, artifacts, "shapes-inpaint-mask")
        page.click("#generate")

        job = newest_job(page)
        expect(job).to_have_attribute("data-status", "succeeded")
        job_id = job.get_attribute("data-job-id")
        wait_for_loaded_images(page, job_id, 1)
        snap(page, artifacts, "shapes-inpaint-result")
        record = httpx.get(f"{shapes.base_url}/v1/jobs/{job_id}", timeout=30).json()
        with httpx.Client(base_url=shapes.base_url, timeout=30) as api:
            picture, _ = fetch(api, record["result"]["images"][0]["url"])
        out = np.asarray(picture.convert("RGB")).astype(int)
        # Right of where the brush reached, the picture is the scene's.
        assert (out[:, 46:] == np.asarray(scene)[:, 46:]).all()
        found = [(f.colour, f.kind, f.position) for f in judge(picture.convert("RGB")).shapes]
        assert ("yellow", "square", "left") in found, found
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        context.close()
