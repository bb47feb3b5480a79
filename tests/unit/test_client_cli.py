"""The `latentq` command line against a fake service (no network)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest

from latentq_client import Client, GenerateOptions, cli
from latentq_client.options import GENERATE, JOB_KINDS, Option
from tests.images import png, solid
from tests.unit.test_client import (
    BASE,
    JOB_ID,
    FakeAPI,
    accepted,
    envelope,
    event_stream,
    finished,
    finished_video,
    job_json,
    mp4_bytes,
    multipart,
    sse,
    webp_bytes,
)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    fake = FakeAPI()
    urls: list[tuple[str, str | None]] = []

    def client(url: str, api_key: str | None = None) -> Client:
        urls.append((url, api_key))
        return Client(url, api_key=api_key, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(cli, "Client", client)
    monkeypatch.delenv("LATENTQ_URL", raising=False)
    monkeypatch.delenv("LATENTQ_API_KEY", raising=False)
    fake.urls = urls  # type: ignore[attr-defined]
    return fake


def succeed(api: FakeAPI, count: int = 1) -> None:
    api.route("POST", "/v1/jobs", accepted())
    raw = finished(api, count)
    api.route(
        "GET",
        f"/v1/jobs/{JOB_ID}/events",
        event_stream(sse("progress", {"step": 2, "total_steps": 4}), sse("succeeded", raw)),
    )


def succeed_video(api: FakeAPI, count: int = 1) -> None:
    api.route("POST", "/v1/jobs", accepted(type="txt2video"))
    raw = finished_video(api, count)
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("succeeded", raw)))


def test_generate_writes_the_image_and_prints_path_and_seed(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    succeed(api)
    out = tmp_path / "fox.png"
    code = cli.main(
        [
            "--url",
            BASE,
            "generate",
            "a fox",
            "-o",
            str(out),
            "--model",
            "tiny",
            "--width",
            "64",
            "--height",
            "96",
            "--steps",
            "3",
            "--seed",
            "42",
            "-n",
            "1",
            "--scheduler",
            "euler",
            "--guidance",
            "7.5",
            "--negative",
            "blurry",
            "--format",
            "png",
            "--priority",
            "high",
        ]
    )
    assert code == 0
    assert out.read_bytes() == png(solid("red"))
    captured = capsys.readouterr()
    assert captured.out == f"{out}\tseed=42\n"
    assert captured.err == ""  # not a terminal: no progress bar
    assert json.loads(api.requests[0].content) == {
        "type": "txt2img",
        "prompt": "a fox",
        "model": "tiny",
        "width": 64,
        "height": 96,
        "steps": 3,
        "seed": 42,
        "n": 1,
        "scheduler": "euler",
        "guidance_scale": 7.5,
        "negative_prompt": "blurry",
        "output_format": "png",
        "priority": "high",
    }


def test_generate_several_images_and_the_format_from_the_suffix(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    succeed(api, 2)
    assert cli.main(["generate", "a fox", "-n", "2", "-o", str(tmp_path / "fox.webp")]) == 0
    assert json.loads(api.requests[0].content) == {
        "type": "txt2img",
        "prompt": "a fox",
        "n": 2,
        "output_format": "webp",
    }
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / 'fox-1.webp'}\tseed=42", f"{tmp_path / 'fox-2.webp'}\tseed=43"]


def test_video_writes_the_mp4_and_prints_path_and_seed(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    succeed_video(api)
    out = tmp_path / "fox.mp4"
    argv = ["video", "a fox running", "--frames", "17", "--fps", "12", "--width", "64"]
    argv += ["--height", "96", "--seed", "42", "--steps", "3", "-m", "tiny-video", "-o", str(out)]
    assert cli.main(argv) == 0
    assert out.read_bytes() == mp4_bytes(0)
    assert capsys.readouterr().out == f"{out}\tseed=42\n"
    assert json.loads(api.requests[0].content) == {
        "type": "txt2video",
        "prompt": "a fox running",
        "num_frames": 17,
        "fps": 12,
        "width": 64,
        "height": 96,
        "model": "tiny-video",
        "steps": 3,
        "seed": 42,
    }


def test_video_to_a_webp_name_saves_the_animated_webp(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    succeed_video(api, 2)
    assert cli.main(["video", "a fox", "-n", "2", "-o", str(tmp_path / "fox.webp")]) == 0
    paths = [tmp_path / "fox-1.webp", tmp_path / "fox-2.webp"]
    assert [p.read_bytes() for p in paths] == [webp_bytes(0), webp_bytes(1)]
    assert capsys.readouterr().out.splitlines() == [
        f"{p}\tseed={42 + i}" for i, p in enumerate(paths)
    ]
    body = json.loads(api.requests[0].content)
    assert body == {"type": "txt2video", "prompt": "a fox", "n": 2}


def test_video_into_a_directory(api: FakeAPI, tmp_path: Path) -> None:
    succeed_video(api)
    assert cli.main(["video", "a fox", "-o", str(tmp_path)]) == 0
    assert (tmp_path / f"{JOB_ID}.mp4").read_bytes() == mp4_bytes(0)


def test_lora_options_on_every_generation_command(api: FakeAPI, tmp_path: Path) -> None:
    succeed(api)
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    image.write_bytes(png(solid("red")))
    mask.write_bytes(png(solid("white")))
    loras = ["--lora", "pixel-art", "--lora", "ink:0.5", "--lora", "blur:-1.25"]
    out = ["-o", str(tmp_path / "out.png")]
    assert cli.main(["generate", "x", *loras, *out]) == 0
    assert cli.main(["img2img", "x", "--image", str(image), *loras, *out]) == 0
    inpaint = ["inpaint", "x", "--image", str(image), "--mask", str(mask)]
    assert cli.main([*inpaint, *loras, *out]) == 0
    assert cli.main(["outpaint", "x", "--image", str(image), "--top", "8", *loras, *out]) == 0
    assert cli.main(["video", "x", *loras, "--no-wait"]) == 0
    wire = [
        {"id": "pixel-art", "scale": 1.0},
        {"id": "ink", "scale": 0.5},
        {"id": "blur", "scale": -1.25},
    ]
    posts = [r for r in api.requests if r.method == "POST"]
    assert len(posts) == 5
    for request in posts:
        if request.headers["content-type"] == "application/json":
            body = json.loads(request.content)
        else:
            body = json.loads(multipart(request)["params"][2])
        assert body["loras"] == wire


class WithClipSkip(GenerateOptions, total=False):
    clip_skip: Annotated[int | None, Option("CLIP layers to skip", ("--skip",))]


def test_an_option_defined_once_is_a_flag_of_its_command(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kind = dataclasses.replace(GENERATE, options=WithClipSkip)
    monkeypatch.setattr(cli, "JOB_KINDS", (kind, *JOB_KINDS[1:]))
    api.route("POST", "/v1/jobs", accepted())
    assert cli.main(["generate", "x", "--skip", "2", "--no-wait"]) == 0
    assert cli.main(["generate", "x", "--no-wait"]) == 0
    with_skip, without = (json.loads(r.content) for r in api.requests)
    assert with_skip == {"type": "txt2img", "prompt": "x", "clip_skip": 2}
    assert without == {"type": "txt2img", "prompt": "x"}
    assert cli.main(["generate", "--help"]) == 0
    assert "--skip SKIP" in capsys.readouterr().out
    assert cli.main(["generate", "x", "--skip", "two"]) == 2
    assert "invalid int value: 'two'" in capsys.readouterr().err


def test_a_bad_lora_says_what_is_expected(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "x", "--lora", "pixel-art:strong"]) == 2
    assert "'pixel-art:strong' is not ID or ID:SCALE" in capsys.readouterr().err


def test_url_and_key_from_options_anywhere_or_the_environment(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    succeed(api)
    urls: list[tuple[str, str | None]] = api.urls  # type: ignore[attr-defined]
    out = str(tmp_path / "x.png")
    assert cli.main(["generate", "x", "-o", out, "--url", "http://a.test", "--api-key", "k"]) == 0
    assert cli.main(["--url", "http://b.test", "--api-key", "k2", "generate", "x", "-o", out]) == 0
    monkeypatch.setenv("LATENTQ_URL", "http://env.test")
    assert cli.main(["generate", "x", "-o", out]) == 0
    monkeypatch.delenv("LATENTQ_URL")
    assert cli.main(["generate", "x", "-o", out]) == 0
    assert urls == [
        ("http://a.test", "k"),
        ("http://b.test", "k2"),
        ("http://env.test", None),
        ("http://127.0.0.1:8000", None),
    ]


def test_inpaint_and_outpaint_send_the_files(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    succeed(api)
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    image.write_bytes(png(solid("blue")))
    mask.write_bytes(png(solid("white")))
    out = str(tmp_path / "out.png")
    args = ["--image", str(image), "--mask", str(mask), "--strength", "0.7", "--mask-blur", "4"]
    assert cli.main(["inpaint", "a door", *args, "-o", out]) == 0
    assert cli.main(["outpaint", "a beach", "--image", str(image), "--left", "64", "-o", out]) == 0
    inpaint, outpaint = (multipart(r) for r in api.requests if r.method == "POST")
    assert json.loads(inpaint["params"][2]) == {
        "type": "inpaint",
        "prompt": "a door",
        "strength": 0.7,
        "mask_blur": 4,
        "output_format": "png",
    }
    assert inpaint["image"][2] == image.read_bytes() and inpaint["mask"][2] == mask.read_bytes()
    assert json.loads(outpaint["params"][2]) == {
        "type": "outpaint",
        "prompt": "a beach",
        "outpaint": {"left": 64, "right": 0, "top": 0, "bottom": 0},
        "output_format": "png",
    }
    assert set(outpaint) == {"params", "image"}


def test_a_failed_job_exits_1_with_its_error(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.route("POST", "/v1/jobs", accepted())
    failed = job_json("failed", error={"code": "out_of_memory", "message": "out of GPU memory"})
    api.route("GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("failed", failed)))
    assert cli.main(["generate", "x", "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert f"job {JOB_ID} failed" in err and "out of GPU memory" in err and "out_of_memory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_canceled_job_exits_1(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.route("POST", "/v1/jobs", accepted())
    api.route(
        "GET", f"/v1/jobs/{JOB_ID}/events", event_stream(sse("canceled", job_json("canceled")))
    )
    assert cli.main(["generate", "x", "-o", str(tmp_path / "x.png")]) == 1
    assert "canceled" in capsys.readouterr().err


def test_an_api_error_exits_2_with_the_message(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    api.route(
        "POST",
        "/v1/jobs",
        envelope(422, "invalid_request", "width: must be a multiple of 8", "width"),
    )
    assert cli.main(["generate", "x", "--width", "500"]) == 2
    err = capsys.readouterr().err
    assert "width: must be a multiple of 8" in err
    assert "HTTP 422" in err and "param=width" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["generate"],
        ["generate", "x", "--steps", "many"],
        ["inpaint", "x", "--image", "a.png"],
        ["paint", "x"],
        ["generate", "x", "--format", "gif"],
        ["generate", "x", "--lora", "pixel-art:strong"],
        ["generate", "x", "--lora", ":0.5"],
        ["video", "x", "--lora", "a:nan"],
        ["video", "x", "--format", "png"],
        ["video", "x", "--frames", "many"],
    ],
)
def test_usage_errors_exit_2(
    api: FakeAPI, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert "usage: latentq" in capsys.readouterr().err
    assert api.requests == []


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out


def test_a_missing_input_file_exits_2(
    api: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["outpaint", "x", "--image", str(tmp_path / "none.png"), "--left", "8"])
    assert code == 2
    assert "none.png" in capsys.readouterr().err


def test_an_unreachable_service_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        cli, "Client", lambda url, api_key=None: Client(url, transport=httpx.MockTransport(refuse))
    )
    assert cli.main(["models"]) == 2
    assert "connection refused" in capsys.readouterr().err


def test_get_and_cancel_print_the_job(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.route("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("running")))
    api.route("DELETE", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=job_json("canceled")))
    assert cli.main(["get", JOB_ID]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert cli.main(["cancel", JOB_ID]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "canceled"


def test_cancel_of_an_ended_job_exits_2(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.route("DELETE", f"/v1/jobs/{JOB_ID}", envelope(409, "job_not_cancelable", "job has ended"))
    assert cli.main(["cancel", JOB_ID]) == 2
    assert "job has ended" in capsys.readouterr().err


def test_get_of_an_unknown_job_exits_2(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["get", "j_nope"]) == 2
    assert "HTTP 404" in capsys.readouterr().err


def test_models_as_a_table_and_json(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    models: list[dict[str, Any]] = [
        {
            "id": "tiny",
            "tasks": ["txt2img", "inpaint"],
            "native_size": [64, 64],
            "default": True,
            "workers": 1,
        },
        {"id": "txt-only", "tasks": ["txt2img"], "native_size": [64, 64], "workers": 0},
    ]
    api.route("GET", "/v1/models", httpx.Response(200, json={"data": models}))
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "TASKS", "SIZE", "WORKERS"]
    assert lines[1].split() == ["tiny", "(default)", "txt2img,inpaint", "64x64", "1"]
    assert lines[2].split() == ["txt-only", "txt2img", "64x64", "0"]
    assert cli.main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == models


def test_models_table_shows_frames_fps_and_adapters(
    api: FakeAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    models: list[dict[str, Any]] = [
        {"id": "tiny", "tasks": ["txt2img"], "native_size": [64, 64], "workers": 1},
        {
            "id": "tiny-video",
            "tasks": ["txt2video"],
            "native_size": [64, 64],
            "default_frames": 9,
            "max_frames": 33,
            "default_fps": 8,
            "adapters": ["motion", "ink"],
            "workers": 2,
        },
    ]
    api.route("GET", "/v1/models", httpx.Response(200, json={"data": models}))
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["MODEL", "TASKS", "SIZE", "FRAMES", "FPS", "ADAPTERS", "WORKERS"]
    assert lines[0].split() == header
    assert lines[1].split() == ["tiny", "txt2img", "64x64", "1"]
    # Each value stands under its heading; the image model leaves the video columns empty.
    starts = [lines[0].index(heading) for heading in header]
    columns = list(zip(starts, [*starts[1:], None], strict=True))
    cells = [[line[start:end].strip() for start, end in columns] for line in lines[1:]]
    assert cells == [
        ["tiny", "txt2img", "64x64", "", "", "", "1"],
        ["tiny-video", "txt2video", "64x64", "9 (max 33)", "8", "motion,ink", "2"],
    ]


def test_no_wait_prints_the_job_id(api: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    api.route("POST", "/v1/jobs", accepted())
    assert cli.main(["generate", "x", "--no-wait"]) == 0
    assert capsys.readouterr().out == f"{JOB_ID}\n"
    assert len(api.requests) == 1


def test_ctrl_c_while_waiting_leaves_the_job_running(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api.route("POST", "/v1/jobs", accepted())

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("latentq_client.job.Job.wait", interrupt)
    assert cli.main(["generate", "x"]) == 130
    assert f"latentq cancel {JOB_ID}" in capsys.readouterr().err
