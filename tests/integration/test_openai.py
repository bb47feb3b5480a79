"""The official `openai` package, unmodified, against the running service."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.images import noise_image, png
from tests.integration.services import Service


@pytest.fixture
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{service.base_url}/v1", api_key="not-needed-here", max_retries=0, timeout=60
    )


def test_generate_with_urls(client: openai.OpenAI, api: httpx.Client) -> None:
    result = client.images.generate(prompt="a lighthouse", n=2, size="64x64")
    assert result.created > 0 and result.data is not None and len(result.data) == 2
    for image in result.data:
        assert image.url is not None
        response = api.get(image.url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_generate_with_b64_json_and_a_dall_e_model_name(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="dall-e-3",
        prompt="a fox",
        size="128x64",
        response_format="b64_json",
        quality="hd",
        style="vivid",
        user="someone",
        extra_body={"seed": 7, "steps": 2},
    )
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (128, 64)
    again = client.images.generate(
        prompt="a fox",
        size="128x64",
        response_format="b64_json",
        extra_body={"seed": 7, "steps": 2},
    )
    assert again.data is not None and again.data[0].b64_json is not None
    same = Image.open(io.BytesIO(base64.b64decode(again.data[0].b64_json)))
    assert (np.asarray(same) == np.asarray(image)).all()


def test_edit_repaints_the_transparent_part_of_the_mask(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    source = noise_image(64, 64, seed=21)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 32))  # transparent: repaint the top-left quarter
    source.save(tmp_path / "image.png")
    mask.save(tmp_path / "mask.png")
    with open(tmp_path / "image.png", "rb") as image, open(tmp_path / "mask.png", "rb") as m:
        result = client.images.edit(
            image=image,
            mask=m,
            prompt="a window",
            n=2,
            response_format="b64_json",
            extra_body={"steps": 3},
        )
    assert result.data is not None and len(result.data) == 2
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or ""))))
    src = np.asarray(source)
    assert out.shape == (64, 64, 3)
    assert (out[48:, 48:] == src[48:, 48:]).all()  # far from the mask: untouched
    assert np.abs(out[:32, :32].astype(int) - src[:32, :32]).mean() > 5


def test_edit_without_a_mask_uses_the_image_transparency(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    rgba = noise_image(64, 64, seed=22).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (32, 32, 64, 64))
    rgba.save(tmp_path / "cutout.png")
    with open(tmp_path / "cutout.png", "rb") as image:
        result = client.images.edit(image=image, prompt="fill", extra_body={"steps": 2})
    assert result.data is not None and result.data[0].url


def test_invalid_requests_raise_bad_request(client: openai.OpenAI, tmp_path: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="x", size="100x100")
    assert "multiple of 8" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="x", n=9)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="x", background="transparent")
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="x", model="my-own-model")
    noise_image(64, 64).save(tmp_path / "opaque.png")
    with open(tmp_path / "opaque.png", "rb") as image, pytest.raises(openai.BadRequestError):
        client.images.edit(image=image, prompt="no transparency anywhere")


@pytest.mark.parametrize("size", ["99999x99999", "4096x4096", "32x32"])
def test_edit_sizes_out_of_range_are_refused_at_once(
    api: httpx.Client, tmp_path: Path, size: str
) -> None:
    """The size is checked before the upload is resized to it (99999x99999 would take tens of
    gigabytes), and the replica keeps answering meanwhile."""
    rgba = noise_image(64, 64, seed=23).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 32))
    response = api.post(
        "/v1/images/edits",
        data={"prompt": "x", "size": size},
        files={"image": ("image.png", png(rgba), "image/png")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "size"
    assert api.get("/healthz").status_code == 200
