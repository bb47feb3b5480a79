"""The video tab (a clip that plays, its MP4 and animated WebP, progress and cancel) and LoRA
adapters chosen per job."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import ADAPTER, VIDEO_MODEL
from tests.browser.playground import api_job, fill_prompt, newest_job, snap
from tests.integration.services import Service

pytestmark = pytest.mark.integration

PLAYER_STATE = """
(video) => ({
  ready: video.readyState,
  duration: video.duration,
  width: video.videoWidth,
  height: video.videoHeight,
  flags: [video.controls, video.loop, video.autoplay, video.muted],
  src: video.currentSrc,
})
"""

LINK_BLOB = """
async (link) => {
  const blob = await (await fetch(link.href)).blob();
  return [blob.type, blob.size];
}
"""


def is_job_submit(request: Any) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/jobs")


def test_the_video_tab_follows_cancels_and_plays_a_clip(
    page: Any, service: Service, artifacts: Path
) -> None:
    page.select_option("#model", VIDEO_MODEL)
    expect(page.locator("#tab-txt2video")).to_have_attribute("aria-selected", "true")

    # A long clip shows its steps and stops when canceled.
    fill_prompt(page, "a slow tide", steps=150)
    page.fill("#video-width", "512")
    page.fill("#video-height", "512")
    page.fill("#frames", "9")
    page.click("#generate")
    long = newest_job(page)
    expect(long.locator(".job-title")).to_have_text(f"Video · {VIDEO_MODEL}")
    expect(long.locator(".job-steps")).to_have_text(re.compile(r"^[1-9]\d* / 150$"))
    expect(long.locator(".job-status")).to_have_text("Running")
    long.locator(".job-cancel").click()
    expect(long).to_have_attribute("data-status", "canceled")
    expect(page.locator("#gallery .card")).to_have_count(0)

    fill_prompt(page, "waves at night", steps=2)
    page.fill("#video-width", "64")
    page.fill("#video-height", "64")
    page.fill("#frames", "7")
    page.fill("#fps", "6")
    expect(page.locator("#video-length")).to_have_text(
        "7 frames at 6 fps: 1.17 s. This model makes up to 9 frames."
    )
    snap(page, artifacts, "video-form")
    with page.expect_request(is_job_submit) as submitted:
        page.click("#generate")
    body = submitted.value.post_data_json
    assert body["type"] == "txt2video" and body["model"] == VIDEO_MODEL
    assert (body["width"], body["height"], body["num_frames"], body["fps"]) == (64, 64, 7, 6)
    assert body["steps"] == 2
    assert not {"n", "output_format", "loras"} & set(body)

    job = newest_job(page)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".job-steps")).to_have_text("2 / 2")
    job_id = job.get_attribute("data-job-id")
    record = api_job(service.base_url, job_id)
    (video,) = record["result"]["videos"]
    assert (video["num_frames"], video["fps"], video["width"], video["height"]) == (7, 6, 64, 64)
    expect(job.locator(".job-detail")).to_have_text(f"1 video of 7 frames, seed {video['seed']}.")

    card = page.locator(f"#gallery .card[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-state", "loaded")
    player = card.locator("video")
    state = player.evaluate(PLAYER_STATE)
    assert state["ready"] >= 2, state  # HAVE_CURRENT_DATA: a frame is decoded
    assert abs(state["duration"] - 7 / 6) < 0.1, state
    assert (state["width"], state["height"]) == (64, 64)
    assert state["flags"] == [True, True, True, True]
    assert state["src"].startswith("blob:")
    # Muted autoplay: it plays without a click.
    page.wait_for_function(
        "(video) => !video.paused && video.currentTime > 0", arg=player.element_handle()
    )
    text = card.locator("figcaption").inner_text()
    for part in (f"Seed {video['seed']}", "waves at night", "7 at 6 fps (1.17 s)", "64×64"):
        assert part in text

    mp4, webp = card.locator(".card-mp4"), card.locator(".card-webp")
    expect(mp4).to_have_attribute("download", f"latentq-{job_id}-0-seed{video['seed']}.mp4")
    expect(webp).to_have_attribute("download", f"latentq-{job_id}-0-seed{video['seed']}.webp")
    assert mp4.evaluate(LINK_BLOB)[0] == "video/mp4"
    assert webp.evaluate(LINK_BLOB)[0] == "image/webp"
    served = httpx.get(video["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4"
    animated = Image.open(io.BytesIO(httpx.get(video["webp_url"]).content))
    assert (animated.format, animated.n_frames, animated.size) == ("WEBP", 7, (64, 64))
    snap(page, artifacts, "video-result")

    # A browser that cannot decode the MP4 shows the animated WebP in its place.
    page.route(
        re.compile(r"/v1/files/.*\.mp4"),
        lambda route: route.fulfill(status=200, content_type="video/mp4", body=b"not a video"),
    )
    page.click("#generate")
    fallback = page.locator(f"#gallery .card:not([data-job-id='{job_id}'])").first
    expect(fallback).to_have_attribute("data-state", "webp")
    expect(fallback.locator("video")).to_have_count(0)
    assert fallback.locator(".card-image img").evaluate("(img) => img.naturalWidth") == 64
    snap(page, artifacts, "video-webp-fallback")


def test_a_chosen_lora_is_sent_and_shown_with_the_image(
    page: Any, service: Service, artifacts: Path
) -> None:
    expect(page.locator("#loras")).to_be_visible()
    row = page.locator(f"#loras .lora[data-adapter='{ADAPTER}']")
    use = page.get_by_label(ADAPTER, exact=True)
    scale = page.get_by_label(f"Scale of {ADAPTER}")
    expect(scale).to_be_disabled()
    use.check()
    expect(scale).to_be_enabled()
    expect(scale).to_have_value("1")

    # A scale out of range: the service's message, at the adapter's row.
    scale.fill("5")
    fill_prompt(page, "an ink sketch", steps=2)
    page.click("#generate")
    expect(page.locator("#form-error .code")).to_contain_text("loras.0.scale")
    expect(row).to_have_class(re.compile(r"\binvalid\b"))
    expect(scale).to_have_attribute("aria-invalid", "true")
    expect(scale).to_be_focused()
    snap(page, artifacts, "lora-invalid-scale")
    scale.fill("0.5")

    # The choice outlives a visit to a model without adapters.
    page.select_option("#model", "txt-only")
    expect(page.locator("#loras")).to_be_hidden()
    page.select_option("#model", "tiny")
    expect(use).to_be_checked()
    expect(scale).to_have_value("0.5")

    with page.expect_request(is_job_submit) as submitted:
        page.click("#generate")
    assert submitted.value.post_data_json["loras"] == [{"id": ADAPTER, "scale": 0.5}]
    job = newest_job(page)
    expect(job).to_have_attribute("data-status", "succeeded")
    job_id = job.get_attribute("data-job-id")
    assert api_job(service.base_url, job_id)["params"]["loras"] == [{"id": ADAPTER, "scale": 0.5}]
    card = page.locator(f"#gallery .card[data-job-id='{job_id}']")
    expect(card).to_have_attribute("data-state", "loaded")
    expect(card.locator(".card-params dt:text-is('LoRA') + dd")).to_have_text(f"{ADAPTER} × 0.5")
    snap(page, artifacts, "lora-result")

    # Unchecked, it is not sent.
    use.uncheck()
    with page.expect_request(is_job_submit) as submitted:
        page.click("#generate")
    assert "loras" not in submitted.value.post_data_json
    expect(newest_job(page, after=job_id)).to_have_attribute("data-status", "succeeded")
