"""The playground on the shipped catalogue: its default model is the trained shapes model, the
prompt box offers that model's example, and the images it shows are the shapes asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_page
from tests.browser.playground import newest_job, snap, wait_for_loaded_images
from tests.integration.helpers import fetch
from tests.integration.services import Service, shapes_service
from worker.shapes.judge import judge

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
