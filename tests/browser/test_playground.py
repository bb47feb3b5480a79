"""The playground at `/`: static files, the form, txt2img, progress, cancel and errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.playground import (
    api_job,
    fill_prompt,
    gallery,
    newest_job,
    snap,
    visible_tabs,
    wait_for_loaded_images,
)
from tests.integration.services import Service

pytestmark = pytest.mark.integration

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"


def test_page_and_static_files_are_served_and_self_contained(service: Service) -> None:
    page = httpx.get(f"{service.base_url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="static/js/main.js">' in page.text
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert {p.suffix for p in files} >= {".html", ".css", ".js"}
    for path in files:
        relative = path.relative_to(STATIC).as_posix()
        served = httpx.get(f"{service.base_url}/static/{relative}")
        assert served.status_code == 200, relative
        assert served.content == path.read_bytes()
        # Works offline: nothing is loaded from another host.
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", served.text), relative
        assert not re.search(r"@import|url\([\"']?(https?:)?//", served.text), relative
        assert not re.search(r"from [\"'](https?:)?//|import\([\"'](https?:)?//", served.text)
    assert httpx.get(f"{service.base_url}/static/nope.js").status_code == 404
    assert "/" not in httpx.get(f"{service.base_url}/openapi.json").json()["paths"]


def test_every_control_has_a_label_and_tabs_work_with_the_keyboard(
    page: Any, artifacts: Path
) -> None:
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, [role=slider], button')]
            .filter((el) => el.type !== 'hidden')
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !el.textContent.trim())
            .map((el) => el.id || el.outerHTML.slice(0, 80))"""
    )
    assert unlabeled == []
    tab = page.locator("#tab-txt2img")
    tab.focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-img2img")).to_be_focused()
    expect(page.locator("#tab-img2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-img2img")).to_be_visible()
    expect(page.locator("#panel-txt2img")).to_be_hidden()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-inpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-inpaint")).to_be_visible()
    # The video tab of another model is hidden, and the keys pass over it.
    page.keyboard.press("End")
    expect(page.locator("#tab-outpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-outpaint")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-txt2img")).to_be_focused()
    expect(page.locator("#panel-txt2img")).to_be_visible()
    # The focused tab shows a focus ring (:focus-visible after keyboard use).
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    snap(page, artifacts, "keyboard-tabs")


def test_the_model_picker_sets_tabs_and_defaults(page: Any, artifacts: Path) -> None:
    models = page.evaluate(
        "() => [...document.querySelectorAll('#model option')].map(o => o.value)"
    )
    assert models == ["tiny", "txt-only", "tiny-video"]
    expect(page.locator("#model")).to_have_value("tiny")
    assert visible_tabs(page) == ["txt2img", "img2img", "inpaint", "outpaint"]
    expect(page.locator("#width")).to_have_value("64")
    expect(page.locator("#height")).to_have_value("64")
    expect(page.locator("#steps")).to_have_value("4")
    schedulers = "() => [...document.querySelectorAll('#scheduler option')].map(o => o.value)"
    assert page.evaluate(schedulers) == ["euler", "euler_a", "ddim", "dpmpp_2m", "unipc", "pndm"]
    expect(page.locator("#loras")).to_be_visible()
    page.click("#tab-outpaint")

    page.select_option("#model", "txt-only")
    assert visible_tabs(page) == ["txt2img"]
    expect(page.locator("#tab-txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-txt2img")).to_be_visible()
    expect(page.locator("#steps")).to_have_value("2")
    assert page.evaluate(schedulers) == ["euler"]
    expect(page.locator("#model-info")).to_contain_text("native 64×64")
    expect(page.locator("#loras")).to_be_hidden()
    snap(page, artifacts, "model-txt-only")

    # A video-only model: the video tab alone, with the model's frame limits.
    page.select_option("#model", "tiny-video")
    assert visible_tabs(page) == ["txt2video"]
    expect(page.locator("#tab-txt2video")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-txt2video")).to_be_visible()
    expect(page.locator("#panel-txt2img")).to_be_hidden()
    expect(page.locator("#video-width")).to_have_value("64")
    expect(page.locator("#video-height")).to_have_value("64")
    expect(page.locator("#frames")).to_have_value("5")
    expect(page.locator("#frames")).to_have_attribute("max", "9")
    expect(page.locator("#fps")).to_have_value("4")
    expect(page.locator("#steps")).to_have_value("2")
    assert page.evaluate(schedulers) == ["unipc", "flow_euler", "dpmpp_2m"]
    expect(page.locator("#video-length")).to_have_text(
        "5 frames at 4 fps: 1.25 s. This model makes up to 9 frames."
    )
    expect(page.locator("#model-info")).to_contain_text("up to 9 frames")
    for hidden in ("#n", "#output-format", "#loras"):
        expect(page.locator(hidden)).to_be_hidden()
    snap(page, artifacts, "model-video")

    page.select_option("#model", "tiny")
    assert visible_tabs(page) == ["txt2img", "img2img", "inpaint", "outpaint"]
    expect(page.locator("#tab-txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-txt2video")).to_be_hidden()
    expect(page.locator("#n")).to_be_visible()
    expect(page.locator("#steps")).to_have_value("4")


def test_generate_shows_progress_and_the_image_in_the_gallery(
    page: Any, service: Service, artifacts: Path
) -> None:
    fill_prompt(page, "a lighthouse at dusk", steps=4)
    page.fill("#negative-prompt", "blurry")
    page.fill("#guidance", "6")
    page.select_option("#scheduler", "ddim")
    page.select_option("#output-format", "webp")
    page.click("#generate")

    job = newest_job(page)
    expect(job).to_have_attribute("data-status", "succeeded")
    job_id = job.get_attribute("data-job-id")
    expect(job.locator(".job-status")).to_have_text(re.compile(r"^Succeeded in [\d.]+ s$"))
    expect(job.locator(".job-steps")).to_have_text("4 / 4")
    assert job.locator(".job-progress").evaluate("(bar) => [bar.value, bar.max]") == [4, 4]
    expect(job.locator(".job-cancel")).to_be_hidden()

    [card] = wait_for_loaded_images(page, job_id, 1)
    record = api_job(service.base_url, job_id)
    assert record["status"] == "succeeded"
    assert record["params"]["negative_prompt"] == "blurry"
    assert record["params"]["guidance_scale"] == 6
    assert record["params"]["scheduler"] == "ddim"
    image = record["result"]["images"][0]
    assert (card["width"], card["height"]) == (64, 64)
    assert card["seed"] == image["seed"]
    assert card["src"].startswith("blob:")
    assert card["href"].startswith("blob:")
    assert card["download"].endswith(f"seed{image['seed']}.webp")
    for text in (f"Seed {image['seed']}", "a lighthouse at dusk", "ddim", "64×64", "blurry"):
        assert text in card["text"]
    snap(page, artifacts, "txt2img-gallery")

    # "Reuse last" puts the last job's seed back; two images then have seeds s and s + 1.
    page.click("#seed-reuse")
    expect(page.locator("#seed-random")).not_to_be_checked()
    expect(page.locator("#seed")).to_have_value(str(image["seed"]))
    page.fill("#n", "2")
    page.click("#generate")
    second = page.locator(f"#jobs .job:not([data-job-id='{job_id}'])").first
    expect(second).to_have_attribute("data-status", "succeeded")
    cards = wait_for_loaded_images(page, second.get_attribute("data-job-id"), 2)
    assert [c["seed"] for c in cards] == [image["seed"], image["seed"] + 1]
    assert len(gallery(page)) == 3
    snap(page, artifacts, "txt2img-reuse-seed")


def test_cancel_a_running_and_a_queued_job(page: Any, service: Service, artifacts: Path) -> None:
    fill_prompt(page, "a long job", steps=150)
    page.fill("#width", "256")
    page.fill("#height", "256")
    page.click("#generate")
    expect(newest_job(page)).to_have_attribute("data-job-id", re.compile(r"^j_"))
    running_id = newest_job(page).get_attribute("data-job-id")
    running = page.locator(f"#jobs .job[data-job-id='{running_id}']")
    # The second job is sent once the first runs: sent while both wait, the worker would
    # take them together as one micro-batch.
    expect(running.locator(".job-status")).to_have_text("Running")
    expect(running.locator(".job-steps")).to_have_text(re.compile(r"^([1-9]\d*) / 150$"))
    page.click("#generate")
    expect(page.locator("#jobs .job")).to_have_count(2)
    queued_id = newest_job(page).get_attribute("data-job-id")
    queued = page.locator(f"#jobs .job[data-job-id='{queued_id}']")

    expect(running.locator(".job-detail")).to_have_text(re.compile(r"^About [\d.]+ s left\.$"))
    expect(queued.locator(".job-status")).to_have_text("Queued · position 1")
    snap(page, artifacts, "cancel-before")

    queued.locator(".job-cancel").click()
    expect(queued).to_have_attribute("data-status", "canceled")
    expect(queued.locator(".job-status")).to_have_text("Canceled")
    running.locator(".job-cancel").click()
    expect(running).to_have_attribute("data-status", "canceled")
    expect(running.locator(".job-status")).to_have_text("Canceled")
    expect(running.locator(".job-cancel")).to_be_hidden()
    step = int(running.locator(".job-steps").inner_text().split(" / ")[0])
    assert 0 < step < 150
    for job_id in (running_id, queued_id):
        assert api_job(service.base_url, job_id)["status"] == "canceled"
        assert not [c for c in gallery(page) if c["job"] == job_id]
    snap(page, artifacts, "cancel-after")


def test_an_invalid_value_shows_the_api_error_next_to_the_form(
    page: Any, service: Service, artifacts: Path
) -> None:
    expected = httpx.post(
        f"{service.base_url}/v1/jobs",
        json={"type": "txt2img", "model": "tiny", "prompt": "x", "width": 100},
    ).json()["error"]
    assert expected["param"] == "width"

    fill_prompt(page, "x")
    page.fill("#width", "100")
    page.click("#generate")
    error = page.locator("#form-error")
    expect(error).to_be_visible()
    expect(error.locator(".message")).to_have_text(expected["message"])
    expect(error).to_have_attribute("role", "alert")
    expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#width")).to_be_focused()
    # The shown size fields only: the video tab has fields of the same names.
    width_field = page.locator("#panel-txt2img .field[data-param=width]")
    height_field = page.locator("#panel-txt2img .field[data-param=height]")
    expect(width_field).to_have_class(re.compile(r"\binvalid\b"))
    expect(height_field).not_to_have_class(re.compile("invalid"))
    assert page.locator("#jobs .job").count() == 0
    snap(page, artifacts, "invalid-width")

    # Fixing the field clears its highlight; the next submit clears the message.
    page.fill("#width", "64")
    expect(width_field).not_to_have_class(re.compile("invalid"))
    page.fill("#prompt", "   ")
    page.click("#generate")
    expect(page.locator("#prompt")).to_have_attribute("aria-invalid", "true")
    expect(error.locator(".message")).to_contain_text("prompt")
