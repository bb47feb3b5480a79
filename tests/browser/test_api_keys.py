"""The playground on a service that requires API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from app.auth import hash_key
from tests.browser.conftest import open_page
from tests.browser.playground import fill_prompt, newest_job, snap, wait_for_loaded_images
from tests.integration.services import Service, start_api

pytestmark = pytest.mark.integration

KEY = "lq_playground-test-key-0123456789"
WRONG = "lq_not-the-right-key-000000"


@pytest.fixture(scope="module")
def keyed_api(service: Service) -> Iterator[str]:
    """A second API replica that requires a key, on the same Redis and worker as `service`."""
    env = {**service.env, "LATENTQ_API_KEYS": f"browser:{hash_key(KEY)}"}
    process, base = start_api(env, service.workdir, "api-browser-keyed")
    try:
        yield base
    finally:
        process.stop()


def test_the_key_field_appears_on_401_and_the_key_goes_only_in_a_header(
    chromium: Any, keyed_api: str, artifacts: Path
) -> None:
    assert httpx.get(f"{keyed_api}/v1/models").status_code == 401
    context, page, errors = open_page(chromium, keyed_api)
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    try:
        page.goto("/")
        expect(page.locator("#auth")).to_be_visible()
        expect(page.locator("#auth-message")).to_have_text("This service needs an API key.")
        expect(page.locator("#service-status")).to_have_text("An API key is needed.")
        expect(page.locator("label[for=api-key]")).to_have_text("API key")
        expect(page.locator("#api-key")).to_have_attribute("type", "password")
        expect(page.locator("#api-key")).to_be_focused()
        expect(page.locator("#key-forget")).to_be_hidden()
        snap(page, artifacts, "api-key-needed")

        page.fill("#api-key", WRONG)
        page.click("#key-save")
        expect(page.locator("#auth-message")).to_have_text(
            "The service refused the key: this API key is not valid"
        )
        page.fill("#api-key", KEY)
        page.click("#key-save")
        expect(page.locator("#auth-message")).to_have_text("Using the API key kept in this tab.")
        page.wait_for_function("document.querySelector('#model').options.length === 3")
        assert page.evaluate("() => sessionStorage.getItem('latentq.apiKey')") == KEY
        assert page.evaluate("() => Object.keys(localStorage).length") == 0
        expect(page.locator("#api-key")).to_have_value("")

        fill_prompt(page, "behind a key", steps=2)
        page.click("#generate")
        job = newest_job(page)
        expect(job).to_have_attribute("data-status", "succeeded")
        job_id = job.get_attribute("data-job-id")
        [card] = wait_for_loaded_images(page, job_id, 1)
        assert (card["width"], card["height"]) == (64, 64)
        expect(job.locator(".job-steps")).to_have_text("2 / 2")
        snap(page, artifacts, "api-key-gallery")

        # A reload keeps the key for this tab.
        page.reload()
        page.wait_for_function("document.querySelector('#model').options.length === 3")
        expect(page.locator("#auth-message")).to_have_text("Using the API key kept in this tab.")

        # Forgetting the key asks for one again.
        page.click("#key-forget")
        expect(page.locator("#auth-message")).to_have_text("This service needs an API key.")
        assert page.evaluate("() => sessionStorage.getItem('latentq.apiKey')") is None
        assert not errors, errors
    finally:
        context.close()

    seen = [(url.split("?")[0].removeprefix(keyed_api), url, auth) for url, auth in requests]
    api = [(path, auth) for path, _, auth in seen if path.startswith("/v1/")]
    paths = {path for path, _ in api}
    assert {"/v1/models", "/v1/jobs", f"/v1/jobs/{job_id}/events"} <= paths
    assert any(p.startswith("/v1/files/") and job_id in p for p in paths), seen
    assert all(KEY not in url for _, url, _ in seen)
    # Only the models were asked for without the key: first, with a wrong key, after forgetting.
    others = [(path, auth) for path, auth in api if auth != f"Bearer {KEY}"]
    assert others == [
        ("/v1/models", None),
        ("/v1/models", f"Bearer {WRONG}"),
        ("/v1/models", None),
    ]
