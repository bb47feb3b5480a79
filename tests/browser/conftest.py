"""Browser fixtures: headless Chromium, driven by Playwright, against the real service.

The browser tests get a service of their own (a real redis-server, one worker, the API) whose
catalogue adds, to the tiny sd1 models of the integration fixtures, a tiny video model and a
demo LoRA adapter, so that every tab and control of the playground has something to drive.
Each test saves screenshots under test-artifacts/browser/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.services import Service, own_service, write_catalog

CHROMIUM = Path(os.environ.get("LATENTQ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TIMEOUT_MS = 60_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


# Package scope: Playwright's sync API keeps an event loop running while it is open, which
# would break the asyncio.run() of tests collected after this package.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    # Missing tools fail the tests rather than skip them: a skipped browser test proves nothing.
    from playwright import sync_api

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (make test installs the Debian package chromium)")
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


VIDEO_MODEL = "tiny-video"
ADAPTER = "ink"

# The video model is kept to a few frames of 64x64 so that a clip takes a second on a CPU.
VIDEO_AND_ADAPTER = """
[[models]]
id = "{video_id}"
source = "{video}"
family = "video"
tasks = ["txt2video"]
native_size = [64, 64]
default_steps = 2
default_frames = 5
max_frames = 9
default_fps = 4

[[adapters]]
id = "{adapter}"
source = "{adapters}/{adapter}.safetensors"
families = ["sd1"]
models = ["tiny"]
demo = true
"""


@pytest.fixture(scope="package")
def service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Redis, one worker holding the tiny sd1 models, the tiny video model and the `ink`
    adapter (built by the worker), and the API."""
    from worker.demo_model import build

    workdir = tmp_path_factory.mktemp("browser-service")
    video = build("video", workdir / "models" / VIDEO_MODEL)
    catalog = write_catalog(workdir / "models.toml", tiny_model)
    catalog.write_text(
        catalog.read_text()
        + VIDEO_AND_ADAPTER.format(
            video_id=VIDEO_MODEL, video=video, adapter=ADAPTER, adapters=workdir / "adapters"
        )
    )
    # A Redis of its own: no worker of another fixture's service takes these jobs.
    with own_service(workdir, catalog, "browser-worker", VIDEO_MODEL, ready_timeout=180) as svc:
        yield svc


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def open_page(browser: Any, base_url: str) -> tuple[Any, Any, list[str]]:
    """A fresh context and page on base_url; uncaught page errors are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


@pytest.fixture
def page(
    chromium: Any, service: Service, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The playground at the service's `/`, its models loaded."""
    context, page, errors = open_page(chromium, service.base_url)
    try:
        page.goto("/")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        yield page
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            page.screenshot(path=artifacts / f"{request.node.name}-failed.png", full_page=True)
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        context.close()
