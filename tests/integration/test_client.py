"""The Python SDK and the `latentq` command against the real service."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from latentq_client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    JobCanceled,
    NotFound,
    ProgressUpdate,
)
from latentq_client.cli import main
from tests.images import noise_image, png
from tests.integration.services import Service

FAST: dict[str, Any] = {"steps": 3, "guidance_scale": 5.0}
SLOW: dict[str, Any] = {"width": 256, "height": 256, "steps": 60}
"""A job long enough (seconds on the tiny model) to be seen queued and running."""


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(service.base_url, timeout=60) as client:
        yield client


def test_generate_and_wait_give_images_of_the_size_and_seed(client: Client) -> None:
    job = client.generate("a red fox", width=96, height=64, n=2, seed=77, **FAST)
    assert job.status in ("queued", "running", "succeeded")
    updates: list[ProgressUpdate] = []
    assert job.wait(timeout=120, progress=updates.append) is job
    assert job.status == "succeeded" and job.is_done
    assert job.seeds == [77, 78] and job.params["seed"] == 77
    images = job.images()
    assert [image.size for image in images] == [(96, 64), (96, 64)]
    assert updates[-1].status == "succeeded" and updates[-1].fraction == 1.0
    assert [Image.open(io.BytesIO(b)).size for b in job.image_bytes()] == [(96, 64)] * 2


def test_defaults_come_from_the_model(client: Client) -> None:
    job = client.generate("defaults", model="tiny").wait(timeout=120)
    assert (job.params["width"], job.params["height"], job.params["steps"]) == (64, 64, 4)
    assert job.images()[0].size == (64, 64)


def test_inpaint_with_files(client: Client, tmp_path: Path) -> None:
    image_path = tmp_path / "house.png"
    noise_image(64, 64, seed=1).save(image_path)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    job = client.inpaint("a red door", image_path, mask, strength=1.0, seed=3, **FAST)
    job.wait(timeout=120)
    assert job.type == "inpaint" and job.seeds == [3]
    (result,) = job.images()
    assert result.size == (64, 64)
    # Far from the feathered mask the original comes back exactly.
    original = Image.open(image_path).convert("RGB")
    assert result.convert("RGB").getpixel((1, 1)) == original.getpixel((1, 1))


def test_img2img_keeps_the_size(client: Client) -> None:
    job = client.img2img("as a painting", png(noise_image(72, 64)), strength=0.5, seed=5, **FAST)
    (result,) = job.wait(timeout=120).images()
    assert job.type == "img2img" and job.params["strength"] == 0.5 and job.seeds == [5]
    assert result.size == (72, 64)


def test_cli_img2img(service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "in.png", tmp_path / "restyled.png"
    noise_image(80, 64).save(source)
    code = main(
        [
            "--url",
            service.base_url,
            "img2img",
            "a fox",
            "--image",
            str(source),
            "--strength",
            "0.5",
            "-o",
            str(out),
            "--seed",
            "4",
            "--steps",
            "4",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as image:
        assert image.size == (80, 64)


def test_outpaint_with_bytes(client: Client) -> None:
    job = client.outpaint("a wide beach", png(noise_image(64, 64)), left=32, right=16, **FAST)
    (result,) = job.wait(timeout=120).images()
    assert result.size == (64 + 32 + 16, 64)
    assert job.params["outpaint"] == {"left": 32, "right": 16, "top": 0, "bottom": 0}


def test_an_invalid_width_is_a_bad_request_naming_the_field(client: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        client.generate("x", width=500)
    error = caught.value
    assert (error.status, error.code, error.param) == (422, "invalid_request", "width")
    assert "multiple of 8" in error.message


def test_an_unknown_model_and_an_unknown_job_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.get("j_" + "x" * 22)
    assert caught.value.status == 404 and caught.value.code == "job_not_found"
    with pytest.raises(NotFound) as caught:
        client.generate("x", model="nope")
    assert caught.value.param == "model"


def test_models(client: Client) -> None:
    models = {m["id"]: m for m in client.models()}
    assert models["tiny"]["native_size"] == [64, 64] and models["tiny"]["default"] is True
    assert models["txt-only"]["tasks"] == ["txt2img"]


def test_save_writes_the_named_files(client: Client, tmp_path: Path) -> None:
    one = client.generate("one", seed=1, **FAST).save(tmp_path / "one.png")
    assert one == [tmp_path / "one.png"]
    two = client.generate("two", n=2, seed=1, **FAST).save(tmp_path / "two.png")
    assert two == [tmp_path / "two-1.png", tmp_path / "two-2.png"]
    for path in one + two:
        assert Image.open(path).format == "PNG"


def test_cli_writes_a_png(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.png"
    code = main(
        [
            "--url",
            service.base_url,
            "generate",
            "a fox",
            "-o",
            str(out),
            "--seed",
            "9",
            "--steps",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"{out}\tseed=9\n"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (64, 64)


def test_cli_reports_api_errors_with_exit_2(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", service.base_url, "generate", "x", "--width", "500"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["--url", service.base_url, "get", "j_" + "x" * 22]) == 2


def test_async_client_generate_and_wait(service: Service) -> None:
    async def scenario() -> tuple[list[int], list[tuple[int, int]]]:
        async with AsyncClient(service.base_url) as client:
            job = await client.generate("async fox", seed=11, width=72, height=64, **FAST)
            await job.wait(timeout=120)
            images = await job.images()
            return job.seeds, [image.size for image in images]

    assert asyncio.run(scenario()) == ([11], [(72, 64)])


# -- what needs events, cancel, Prefer: wait and Idempotency-Key on the server --------------


def test_events_stream_progress_then_the_final_job(client: Client) -> None:
    job = client.generate("streamed", seed=5, width=128, height=128, steps=6)
    events = list(client.events(job.id))
    names = [event.name for event in events]
    assert names[-1] == "succeeded" and names.count("succeeded") == 1, names
    assert set(names) <= {"state", "progress", "succeeded"}
    final = events[-1].data
    assert final["id"] == job.id and final["result"]["images"][0]["seed"] == 5
    for event in events:
        if event.name == "progress":
            assert event.data["total_steps"] == 6 and 0 <= event.data["step"] <= 6
            assert set(event.data) >= {"step", "total_steps", "fraction", "eta_s"}


def test_wait_follows_the_event_stream(client: Client) -> None:
    job = client.generate("followed", **SLOW)
    updates: list[ProgressUpdate] = []
    job.wait(timeout=120, progress=updates.append)
    assert updates[0].status in ("queued", "running")
    assert any(u.status == "running" and u.step > 0 for u in updates), updates
    assert updates[-1].status == "succeeded" and updates[-1].step == 60


def test_prefer_wait_returns_the_finished_job(client: Client) -> None:
    job = client.generate("waited", wait=30, **FAST)
    assert job.is_done and job.status == "succeeded"
    assert job.images()[0].size == (64, 64)


def test_cancel_a_job_then_cancel_again_is_a_conflict(client: Client) -> None:
    job = client.generate("canceled", **SLOW)
    canceled = client.cancel(job.id)
    assert canceled.status == "canceled" and canceled.id == job.id
    with pytest.raises(JobCanceled) as caught:
        job.wait(timeout=60)
    assert caught.value.job.status == "canceled"
    with pytest.raises(Conflict) as conflict:
        client.cancel(job.id)
    assert conflict.value.code == "job_not_cancelable"


def test_cli_cancel(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(service.base_url) as client:
        job = client.generate("to cancel", **SLOW)
    assert main(["--url", service.base_url, "cancel", job.id]) == 0
    assert '"status": "canceled"' in capsys.readouterr().out
    assert main(["--url", service.base_url, "cancel", job.id]) == 2
    assert "job_not_cancelable" in capsys.readouterr().err


def test_idempotency_key_returns_the_first_job(client: Client) -> None:
    key = f"client-test-{uuid.uuid4()}"
    first = client.generate("once", idempotency_key=key, **FAST)
    again = client.generate("once", idempotency_key=key, **FAST)
    assert again.id == first.id


def test_async_events_and_cancel(service: Service) -> None:
    async def scenario() -> tuple[list[str], str]:
        async with AsyncClient(service.base_url) as client:
            job = await client.generate("async canceled", **SLOW)
            names: list[str] = []
            async for event in client.events(job.id):
                names.append(event.name)
                if event.name in ("state", "progress") and len(names) == 1:
                    await client.cancel(job.id)
            return names, (await client.get(job.id)).status

    names, status = asyncio.run(scenario())
    assert names[-1] == "canceled" and status == "canceled", names
