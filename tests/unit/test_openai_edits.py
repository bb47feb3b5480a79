"""`/v1/images/edits` checks the size it is asked for before any pixel work, and does that
work in the thread pool, never on the event loop."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import openai_compat
from app.auth import KeyRing
from app.main import create_app
from app.settings import AppSettings
from jobs.errors import InvalidRequest
from tests.images import png


def cutout(size: tuple[int, int] = (64, 64)) -> bytes:
    image = Image.new("RGBA", size, (200, 30, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    return png(image)


@pytest.mark.parametrize(
    "size", ["99999x99999", "4096x4096", "2048x4096", "32x64", "64x10", "3000x1000"]
)
def test_sizes_out_of_range_are_refused_before_any_resize(
    size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def resize(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image was resized before the size was checked")

    monkeypatch.setattr(Image.Image, "resize", resize)
    with pytest.raises(InvalidRequest) as info:
        openai_compat.edit({"prompt": "x", "size": size}, [cutout()], None, max_pixels=2048**2)
    assert info.value.param == "size"
    assert "64" in info.value.message and "2048" in info.value.message


def test_the_pixel_limit_applies_to_the_size_too() -> None:
    with pytest.raises(InvalidRequest) as info:
        openai_compat.edit(
            {"prompt": "x", "size": "1024x1024"}, [cutout()], None, max_pixels=512**2
        )
    assert info.value.param == "size"


def test_a_size_in_range_is_honoured() -> None:
    submission, _ = openai_compat.edit(
        {"prompt": "x", "size": "128x96"}, [cutout()], None, max_pixels=2048**2
    )
    for name in ("image", "mask"):
        assert Image.open(io.BytesIO(submission.files[name])).size == (128, 96)


def test_the_pixel_work_runs_in_the_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding, resizing and encoding the upload would stall every request of the replica
    if it ran on the event loop."""
    seen: dict[str, Any] = {}

    def edit(*args: object, **kwargs: object) -> object:
        try:
            asyncio.get_running_loop()
            seen["on_loop"] = True
        except RuntimeError:
            seen["on_loop"] = False
        raise InvalidRequest("stop here", param="size")

    monkeypatch.setattr(openai_compat, "edit", edit)
    app = create_app(AppSettings(api_keys="", allow_open=True))
    # Only what the route reads before it submits: the keys, the limiter and the settings.
    app.state.latentq = SimpleNamespace(
        keys=KeyRing(""), limiter=SimpleNamespace(enabled=False), settings=AppSettings(), holds=None
    )
    client = TestClient(app)
    response = client.post(
        "/v1/images/edits",
        data={"prompt": "x", "size": "64x64"},
        files={"image": ("image.png", cutout(), "image/png")},
    )
    assert response.status_code == 400, response.text
    assert seen == {"on_loop": False}
