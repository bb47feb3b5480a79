"""Helpers shared by the browser tests: driving the playground page and reading its state."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

IMAGES_STATE = """
() => [...document.querySelectorAll('#gallery .card')].map((card) => {
  const img = card.querySelector('img');
  return {
    job: card.dataset.jobId,
    seed: Number(card.dataset.seed),
    state: card.dataset.state,
    width: img.naturalWidth,
    height: img.naturalHeight,
    complete: img.complete,
    src: img.getAttribute('src') || '',
    text: card.querySelector('figcaption').innerText,
    download: card.querySelector('.card-download').getAttribute('download') || '',
    href: card.querySelector('.card-download').getAttribute('href') || '',
  };
})
"""


def snap(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def fill_prompt(page: Any, prompt: str, *, steps: int | None = None) -> None:
    page.fill("#prompt", prompt)
    if steps is not None:
        page.fill("#steps", str(steps))


def visible_tabs(page: Any) -> list[str]:
    """The modes of the tabs shown, in order."""
    modes: list[str] = page.evaluate(
        "() => [...document.querySelectorAll('[role=tab]')]"
        ".filter((tab) => !tab.hidden).map((tab) => tab.dataset.mode)"
    )
    return modes


def newest_job(page: Any, after: str | None = None) -> Any:
    """The newest job's card. With ``after`` (the id of the job that was newest before a
    submit): once the submitted job's card is on top, pinned by its id — the card appears only
    when the submit is answered, and until then the older card would be found instead."""
    if after is None:
        return page.locator("#jobs .job").first
    page.wait_for_function(
        """(old) => {
          const job = document.querySelector('#jobs .job');
          return job !== null && Boolean(job.dataset.jobId) && job.dataset.jobId !== old;
        }""",
        arg=after,
    )
    job_id = page.locator("#jobs .job").first.get_attribute("data-job-id")
    return page.locator(f"#jobs .job[data-job-id='{job_id}']")


def gallery(page: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(IMAGES_STATE)
    return result


def wait_for_loaded_images(page: Any, job_id: str, count: int) -> list[dict[str, Any]]:
    """The gallery cards of job_id once `count` of them have decoded their image."""
    page.wait_for_function(
        """([job, count]) => {
          const cards = [...document.querySelectorAll(`#gallery .card[data-job-id="${job}"]`)];
          return cards.length === count && cards.every((card) => {
            const img = card.querySelector('img');
            return card.dataset.state === 'loaded' && img.complete && img.naturalWidth > 0;
          });
        }""",
        arg=[job_id, count],
    )
    return [card for card in gallery(page) if card["job"] == job_id]


def api_job(base_url: str, job_id: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base_url}/v1/jobs/{job_id}", headers=headers, timeout=30)
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


RECORD_FORMS = """
() => {
  window.submittedForms = [];
  const fetchForReal = window.fetch;
  window.fetch = async (input, init) => {
    if (init && init.body instanceof FormData) {
      const parts = {};
      for (const [name, value] of init.body.entries()) {
        if (value instanceof Blob) {
          const bytes = new Uint8Array(await value.arrayBuffer());
          let binary = "";
          for (const byte of bytes) {
            binary += String.fromCharCode(byte);
          }
          parts[name] = {base64: btoa(binary), type: value.type};
        } else {
          parts[name] = {text: value};
        }
      }
      window.submittedForms.push(parts);
    }
    return fetchForReal(input, init);
  };
}
"""


def record_forms(page: Any) -> None:
    """Keeps a copy of every multipart form the page sends, in window.submittedForms."""
    page.evaluate(RECORD_FORMS)


def only_form(page: Any) -> dict[str, Any]:
    """The parts of the one multipart form sent: text, or (bytes, content type)."""
    page.wait_for_function("() => window.submittedForms.length > 0")
    forms = page.evaluate("() => window.submittedForms")
    assert len(forms) == 1
    parts: dict[str, Any] = {}
    for name, part in forms[-1].items():
        if "text" in part:
            parts[name] = part["text"]
        else:
            parts[name] = (base64.b64decode(part["base64"]), part["type"])
    return parts


def stroke(page: Any, selector: str, points: list[tuple[float, float]], size: int) -> None:
    """Drags the mouse through points given in image pixels of the canvas at selector."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    scale_x, scale_y = box["width"] / size, box["height"] / size

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + point[0] * scale_x, box["y"] + point[1] * scale_y

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(point), steps=8)
    page.mouse.up()


def set_brush(page: Any, size: int) -> None:
    page.locator("#brush-size").evaluate(
        "(input, size) => { input.value = size; input.dispatchEvent(new Event('input')); }",
        size,
    )
    expect(page.locator("#brush-size-value")).to_have_text(f"{size} px")
