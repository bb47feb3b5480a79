"""Img2img (an image dropped or chosen), inpaint (a mask painted with the mouse) and outpaint
(padding typed and dragged)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.playground import (
    api_job,
    fill_prompt,
    newest_job,
    only_form,
    record_forms,
    set_brush,
    snap,
    stroke,
    wait_for_loaded_images,
)
from tests.images import noise_image
from tests.integration.services import Service

pytestmark = pytest.mark.integration

SIZE = 64


def gradient_png(path: Path) -> np.ndarray:
    x = np.linspace(0, 255, SIZE, dtype=np.uint8)
    pixels = np.stack(
        [
            np.tile(x, (SIZE, 1)),
            np.tile(x[:, None], (1, SIZE)),
            np.full((SIZE, SIZE), 96, np.uint8),
        ],
        axis=-1,
    )
    Image.fromarray(pixels, "RGB").save(path)
    return pixels


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_inpaint_with_a_mask_painted_with_the_mouse(
    page: Any, service: Service, artifacts: Path, tmp_path: Path
) -> None:
    original = gradient_png(tmp_path / "gradient.png")
    record_forms(page)
    page.click("#tab-inpaint")
    page.set_input_files("#inpaint-file", tmp_path / "gradient.png")
    expect(page.locator("#mask-stage")).to_be_visible()
    sizes = (
        "() => ['mask-image', 'mask-paint'].map(id => [document.getElementById(id).width, "
        "document.getElementById(id).height])"
    )
    assert page.evaluate(sizes) == [[SIZE, SIZE], [SIZE, SIZE]]
    fill_prompt(page, "a red door", steps=4)
    page.fill("#inpaint-blur", "4")

    # Painted, then cleared: nothing to repaint, said before anything is sent.
    stroke(page, "#mask-paint", [(30, 10), (30, 50)], SIZE)
    page.click("#mask-clear")
    page.click("#generate")
    expect(page.locator("#form-error .message")).to_contain_text("Paint the areas to repaint")
    expect(page.locator(".field[data-param=mask]")).to_have_class(re.compile(r"\binvalid\b"))

    set_brush(page, 6)
    stroke(page, "#mask-paint", [(10.5, 6), (10.5, 58)], SIZE)
    stroke(page, "#mask-paint", [(50.5, 6), (50.5, 58)], SIZE)
    page.click("#tool-eraser")
    expect(page.locator("#tool-eraser")).to_have_attribute("aria-pressed", "true")
    set_brush(page, 16)
    stroke(page, "#mask-paint", [(50.5, 1), (50.5, 63)], SIZE)
    page.click("#tool-brush")
    snap(page, artifacts, "inpaint-mask")

    page.click("#generate")
    parts = only_form(page)
    assert set(parts) == {"params", "image", "mask"}
    params = json.loads(parts["params"])
    assert params["type"] == "inpaint"
    assert params["mask_blur"] == 4
    assert parts["image"][1] == parts["mask"][1] == "image/png"
    assert (rgb(parts["image"][0]) == original).all()
    mask = np.asarray(Image.open(io.BytesIO(parts["mask"][0])).convert("L")).astype(int)
    assert mask.shape == (SIZE, SIZE)
    assert (mask[8:56, 9:12] == 255).all(), "the brush stroke is white"
    assert (mask[:, 20:] == 0).all(), "the erased stroke and the rest are black"
    assert (mask[:, :4] == 0).all()

    job = newest_job(page)
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".job-steps")).to_have_text("4 / 4")
    job_id = job.get_attribute("data-job-id")
    [card] = wait_for_loaded_images(page, job_id, 1)
    assert (card["width"], card["height"]) == (SIZE, SIZE)
    assert "Inpaint" in card["text"]

    record = api_job(service.base_url, job_id)
    assert record["type"] == "inpaint"
    result = rgb(httpx.get(record["result"]["images"][0]["url"]).content)
    assert (result[:, 32:] == original[:, 32:]).all(), "pixels far from the mask are kept"
    assert np.abs(result[8:56, 8:13] - original[8:56, 8:13]).mean() > 5, "the stroke is repainted"
    snap(page, artifacts, "inpaint-result")


def test_outpaint_an_image_sent_from_the_gallery(
    page: Any, service: Service, artifacts: Path
) -> None:
    record_forms(page)
    fill_prompt(page, "a wide beach", steps=2)
    page.click("#generate")
    first = newest_job(page)
    expect(first).to_have_attribute("data-status", "succeeded")
    source_id = first.get_attribute("data-job-id")
    wait_for_loaded_images(page, source_id, 1)
    source = api_job(service.base_url, source_id)["result"]["images"][0]
    source_pixels = rgb(httpx.get(source["url"]).content)

    page.locator(f"#gallery .card[data-job-id='{source_id}'] .card-outpaint").click()
    expect(page.locator("#tab-outpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#outpaint-stage")).to_be_visible()
    expect(page.locator("#pad-left")).to_have_value("16")
    expect(page.locator("#pad-right")).to_have_value("16")

    page.fill("#pad-top", "8")
    expect(page.locator("#canvas-size")).to_have_text("Image 64×64 on a canvas of 96×72.")
    page.locator(".handle-bottom").scroll_into_view_if_needed()
    handle = page.locator(".handle-bottom").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 90, steps=10)
    page.mouse.up()
    bottom = int(page.input_value("#pad-bottom"))
    assert bottom > 0 and bottom % 8 == 0
    expect(page.locator(".handle-bottom")).to_have_attribute("aria-valuenow", str(bottom))
    page.locator(".handle-right").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#pad-right")).to_have_value("24")
    width, height = SIZE + 16 + 24, SIZE + 8 + bottom
    expect(page.locator("#canvas-size")).to_have_text(
        f"Image 64×64 on a canvas of {width}×{height}."
    )
    page.fill("#outpaint-blur", "4")
    snap(page, artifacts, "outpaint-canvas")

    page.click("#generate")
    parts = only_form(page)
    assert set(parts) == {"params", "image"}
    params = json.loads(parts["params"])
    assert params["type"] == "outpaint"
    assert params["outpaint"] == {"left": 16, "right": 24, "top": 8, "bottom": bottom}
    assert (rgb(parts["image"][0]) == source_pixels).all()

    job = newest_job(page, after=source_id)
    expect(job).to_have_attribute("data-status", "succeeded")
    job_id = job.get_attribute("data-job-id")
    [card] = wait_for_loaded_images(page, job_id, 1)
    assert (card["width"], card["height"]) == (width, height)
    assert "left 16, right 24, top 8, bottom" in card["text"]
    record = api_job(service.base_url, job_id)
    assert record["params"]["outpaint"] == params["outpaint"]
    snap(page, artifacts, "outpaint-result")

    # The outpainted image goes on to inpaint at its new size.
    page.locator(f"#gallery .card[data-job-id='{job_id}'] .card-inpaint").click()
    expect(page.locator("#tab-inpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#mask-stage")).to_be_visible()
    page.wait_for_function(
        "([w, h]) => document.getElementById('mask-paint').width === w"
        " && document.getElementById('mask-paint').height === h",
        arg=[width, height],
    )


DROP = """
(frame, [data, name]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: "image/png"}));
  frame.dispatchEvent(
    new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}),
  );
}
"""


def test_img2img_returns_an_image_of_the_input_size(
    page: Any, service: Service, artifacts: Path, tmp_path: Path
) -> None:
    gradient_png(tmp_path / "gradient.png")
    wide = noise_image(80, 64, seed=3)
    wide.save(tmp_path / "wide.png")
    record_forms(page)
    page.click("#tab-img2img")
    expect(page.locator("#panel-img2img")).to_be_visible()
    expect(page.locator("#img2img-strength-value")).to_have_text("0.75")
    expect(page.locator("#img2img-preview")).to_be_hidden()
    fill_prompt(page, "an ink drawing", steps=4)
    page.click("#generate")
    expect(page.locator("#form-error .message")).to_have_text(
        "Choose an image to start from first."
    )
    expect(page.locator("#panel-img2img .field[data-param=image]")).to_have_class(
        re.compile(r"\binvalid\b")
    )

    # An image dropped on the frame, then another chosen with the file input in its place.
    dropped = base64.b64encode((tmp_path / "gradient.png").read_bytes()).decode()
    page.locator("#img2img-frame").evaluate(DROP, [dropped, "gradient.png"])
    expect(page.locator("#img2img-size")).to_have_text("Image 64×64: the result has this size.")
    page.set_input_files("#img2img-file", tmp_path / "wide.png")
    expect(page.locator("#img2img-size")).to_have_text("Image 80×64: the result has this size.")
    expect(page.locator("#img2img-preview")).to_be_visible()
    page.locator("#img2img-strength").evaluate(
        "(input) => { input.value = 0.5; input.dispatchEvent(new Event('input')); }"
    )
    expect(page.locator("#img2img-strength-value")).to_have_text("0.50")
    snap(page, artifacts, "img2img-input")

    page.click("#generate")
    parts = only_form(page)
    assert set(parts) == {"params", "image"}
    params = json.loads(parts["params"])
    assert params["type"] == "img2img"
    assert params["strength"] == 0.5
    assert "mask_blur" not in params
    assert (rgb(parts["image"][0]) == np.asarray(wide)).all()

    job = newest_job(page)
    expect(job).to_have_attribute("data-status", "succeeded")
    # Half the schedule is run: 2 of 4 steps.
    expect(job.locator(".job-steps")).to_have_text("2 / 2")
    job_id = job.get_attribute("data-job-id")
    [card] = wait_for_loaded_images(page, job_id, 1)
    assert (card["width"], card["height"]) == (80, 64)
    assert "Image to image" in card["text"] and "Strength\n0.5" in card["text"]
    record = api_job(service.base_url, job_id)
    image = record["result"]["images"][0]
    assert (image["width"], image["height"]) == (80, 64)
    assert Image.open(io.BytesIO(httpx.get(image["url"]).content)).size == (80, 64)
    snap(page, artifacts, "img2img-result")

    # The result goes on to img2img again from the gallery.
    page.locator(f"#gallery .card[data-job-id='{job_id}'] .card-img2img").click()
    expect(page.locator("#tab-img2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img-size")).to_have_text("Image 80×64: the result has this size.")
