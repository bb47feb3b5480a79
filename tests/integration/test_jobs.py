"""Each job type end to end: HTTP → Redis/RQ → worker process → storage → signed URL."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from PIL import Image

from jobs.settings import Settings
from jobs.storage import FILES_ROUTE, LocalStorage
from tests.images import noise_image, png, png_b64
from tests.integration.helpers import fetch, pixels, run, submit, wait
from tests.integration.services import Service

FAST = {"steps": 3, "guidance_scale": 5.0}


def test_txt2img_returns_images_of_the_requested_size(api: httpx.Client) -> None:
    job = run(api, type="txt2img", prompt="a red fox", width=96, height=64, n=2, seed=5, **FAST)
    assert job["params"]["seed"] == 5 and job["params"]["scheduler"] == "euler"
    assert job["progress"] == {"step": 3, "total_steps": 3, "fraction": 1.0, "eta_s": None}
    assert job["started_at"] and job["finished_at"] and job["created_at"] <= job["started_at"]
    assert job["error"] is None and job["queue_position"] is None
    images = job["result"]["images"]
    assert [i["seed"] for i in images] == [5, 6]
    for entry in images:
        image, response = fetch(api, entry["url"])
        assert image.size == (96, 64) == (entry["width"], entry["height"])
        assert response.headers["content-type"] == "image/png" == entry["content_type"]


def test_defaults_come_from_the_catalogue(api: httpx.Client) -> None:
    job = run(api, type="txt2img", prompt="defaults")
    params = job["params"]
    assert (params["width"], params["height"], params["steps"]) == (64, 64, 4)
    assert params["model"] == "tiny" and params["guidance_scale"] == 7.5
    assert 0 <= params["seed"] < 2**32 and job["result"]["images"][0]["seed"] == params["seed"]
    image, _ = fetch(api, job["result"]["images"][0]["url"])
    assert image.size == (64, 64)


def test_same_seed_same_pixels_other_seed_other_pixels(api: httpx.Client) -> None:
    body = {"type": "txt2img", "prompt": "reproducible", "width": 64, "height": 64, **FAST}
    first = pixels(api, run(api, seed=1234, **body))
    again = pixels(api, run(api, seed=1234, **body))
    other = pixels(api, run(api, seed=1235, **body))
    assert (first == again).all()
    assert np.abs(first - other).mean() > 5


def test_image_i_of_a_job_is_the_job_with_seed_plus_i(api: httpx.Client) -> None:
    body = {"type": "txt2img", "prompt": "batch", "width": 64, "height": 64, **FAST}
    batch = run(api, seed=40, n=2, **body)
    alone = run(api, seed=41, **body)
    diff = np.abs(pixels(api, batch, 1) - pixels(api, alone))
    assert diff.max() <= 2  # a batched run may differ from a single one by rounding only


def test_schedulers_and_output_formats(api: httpx.Client) -> None:
    for scheduler, fmt, mime in (
        ("euler_a", "jpeg", "image/jpeg"),
        ("dpmpp_2m", "webp", "image/webp"),
        ("ddim", "png", "image/png"),
    ):
        job = run(
            api,
            type="txt2img",
            prompt="formats",
            scheduler=scheduler,
            output_format=fmt,
            seed=3,
            **FAST,
        )
        entry = job["result"]["images"][0]
        image, response = fetch(api, entry["url"])
        assert entry["content_type"] == mime == response.headers["content-type"]
        assert image.format == {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]
        assert job["params"]["scheduler"] == scheduler


def test_png_carries_the_generation_parameters(api: httpx.Client) -> None:
    job = run(
        api, type="txt2img", prompt="metadata please", negative_prompt="blur", seed=77, **FAST
    )
    image, _ = fetch(api, job["result"]["images"][0]["url"])
    meta = json.loads(image.text["parameters"])  # type: ignore[attr-defined]
    assert meta["prompt"] == "metadata please" and meta["negative_prompt"] == "blur"
    assert meta["seed"] == 77 and meta["steps"] == 3 and meta["model"] == "tiny"
    assert meta["job_id"] == job["id"]


def test_a_long_non_ascii_prompt_in_jpeg(api: httpx.Client) -> None:
    """The longest prompts, all characters outside the BMP, still fit a JPEG's comment."""
    prompt, negative = "\U0001f98a" * 4000, "\u00e9\U0001f30a" * 2000
    job = run(
        api, type="txt2img", prompt=prompt, negative_prompt=negative, output_format="jpeg", **FAST
    )
    image, _ = fetch(api, job["result"]["images"][0]["url"])
    meta = json.loads(image.info["comment"].decode())
    assert meta["prompt"] == prompt and meta["negative_prompt"] == negative
    assert meta["job_id"] == job["id"]


def test_inpaint_keeps_pixels_outside_the_mask(api: httpx.Client) -> None:
    original = noise_image(96, 80, seed=3)
    mask = np.zeros((80, 96), dtype=np.uint8)
    mask[24:56, 32:64] = 255
    blur = 4
    job = run(
        api,
        type="inpaint",
        prompt="fill the hole",
        image=png_b64(original),
        mask=png_b64(Image.fromarray(mask, "L")),
        mask_blur=blur,
        seed=9,
        steps=4,
    )
    out = pixels(api, job)
    src = np.asarray(original).astype(np.int16)
    assert out.shape == src.shape
    reach = 3 * blur + 2
    keep = np.ones(mask.shape, dtype=bool)
    keep[24 - reach : 56 + reach, 32 - reach : 64 + reach] = False
    assert np.abs(out[keep] - src[keep]).max() == 0
    # The masked square was repainted.
    assert np.abs(out[24:56, 32:64] - src[24:56, 32:64]).mean() > 10


def test_inpaint_of_an_odd_sized_image(api: httpx.Client) -> None:
    original = noise_image(70, 66, seed=4)
    mask = np.zeros((66, 70), dtype=np.uint8)
    mask[:20, :20] = 255
    job = run(
        api,
        type="inpaint",
        prompt="corner",
        image=png_b64(original),
        mask=png_b64(Image.fromarray(mask, "L")),
        mask_blur=0,
        seed=1,
        **FAST,
    )
    out = pixels(api, job)
    assert out.shape == (66, 70, 3)
    src = np.asarray(original).astype(np.int16)
    assert (out[30:, 30:] == src[30:, 30:]).all()


def test_outpaint_returns_the_padded_canvas_with_the_original_in_place(
    api: httpx.Client,
) -> None:
    original = noise_image(64, 64, seed=5)
    pad = {"left": 32, "right": 0, "top": 8, "bottom": 16}
    job = run(
        api,
        type="outpaint",
        prompt="wider",
        image=png_b64(original),
        outpaint=pad,
        mask_blur=4,
        seed=11,
        **FAST,
    )
    entry = job["result"]["images"][0]
    out = pixels(api, job)
    assert (entry["width"], entry["height"]) == (96, 88) and out.shape == (88, 96, 3)
    src = np.asarray(original).astype(np.int16)
    band = 16  # OUTPAINT_OVERLAP, capped at a quarter of 64
    placed = out[8 : 8 + 64, 32 : 32 + 64]
    # Away from the padded edges (left, top, bottom) the original is exactly where it was.
    assert (placed[band : 64 - band, band:] == src[band : 64 - band, band:]).all()
    # The new border is generated, not the stretched edge of the original.
    assert np.abs(out[:, :24] - out[:, 24:25]).mean() > 5


def test_multipart_submit(api: httpx.Client) -> None:
    original = noise_image(64, 64, seed=6)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    files = {}
    for name, image in (("image", original), ("mask", mask)):
        files[name] = (f"{name}.png", png(image), "image/png")
    params = {"type": "inpaint", "prompt": "multipart", "seed": 2, "mask_blur": 0, **FAST}
    response = api.post("/v1/jobs", data={"params": json.dumps(params)}, files=files)
    assert response.status_code == 202, response.text
    job = wait(api, response.json()["id"])
    assert job["status"] == "succeeded", job
    out = pixels(api, job)
    src = np.asarray(original).astype(np.int16)
    assert (out[40:, 40:] == src[40:, 40:]).all()


def test_jobs_are_taken_in_priority_order(api: httpx.Client, service: object) -> None:
    # A long job occupies the one worker while three more wait behind it.
    blocker = submit(api, type="txt2img", prompt="blocker", width=256, height=256, steps=20)
    low = submit(api, type="txt2img", prompt="low", priority="low", **FAST)
    normal = submit(api, type="txt2img", prompt="normal", **FAST)
    high = submit(api, type="txt2img", prompt="high", priority="high", **FAST)
    positions = {
        name: api.get(f"/v1/jobs/{job['id']}").json()["queue_position"]
        for name, job in (("high", high), ("normal", normal), ("low", low))
    }
    if api.get(f"/v1/jobs/{blocker['id']}").json()["status"] in ("queued", "running"):
        assert positions["high"] < positions["normal"] < positions["low"], positions
    done = {
        name: wait(api, job["id"])
        for name, job in (("blocker", blocker), ("low", low), ("normal", normal), ("high", high))
    }
    started = sorted(("high", "normal", "low"), key=lambda n: done[n]["started_at"])
    assert started == ["high", "normal", "low"]


def test_models_lists_the_catalogue_with_live_workers(api: httpx.Client) -> None:
    data = api.get("/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    assert by_id["tiny"]["default"] and not by_id["txt-only"]["default"]
    assert by_id["tiny"]["tasks"] == ["txt2img", "img2img", "inpaint", "outpaint"]
    assert by_id["tiny"]["native_size"] == [64, 64]
    assert "euler" in by_id["tiny"]["schedulers"]
    assert by_id["tiny"]["workers"] == 1 and by_id["txt-only"]["workers"] == 1


def test_files_need_a_valid_signature(api: httpx.Client) -> None:
    job = run(api, type="txt2img", prompt="signed", **FAST)
    url = httpx.URL(job["result"]["images"][0]["url"])
    assert api.get(url).status_code == 200
    bare = api.get(url.path)
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "invalid_signature"
    params = dict(url.params)
    forged = api.get(url.path, params={**params, "sig": "0" * 64})
    assert forged.status_code == 403
    expired = api.get(url.path, params={**params, "expires": "1000"})
    assert expired.status_code == 403
    other = api.get(url.path.replace("/0.png", "/1.png"), params=params)
    assert other.status_code == 403
    traversal = api.get("/v1/files/../../etc/passwd", params=params)
    assert traversal.status_code in (403, 404)
    assert traversal.json()["error"]["code"] in ("invalid_signature", "not_found", "file_not_found")


def test_files_are_cached_no_longer_than_their_url_is_valid(
    api: httpx.Client, service: Service
) -> None:
    """A browser may keep a file for as long as its URL works, and not past that: the cache
    lifetime is what is left of the URL's, however late in its life it is fetched."""
    job = run(api, type="txt2img", prompt="cached", **FAST)
    url = httpx.URL(job["result"]["images"][0]["url"])
    fresh = api.get(url)
    assert fresh.status_code == 200
    ttl = int(dict(url.params)["expires"]) - time.time()
    assert 0 <= max_age(fresh) <= ttl + 1 and max_age(fresh) > ttl - 60
    # The same file behind a URL that expires in two minutes (signed as the API signs).
    secret = Settings(data_dir=service.workdir / "data").signing_key()
    storage = LocalStorage(service.workdir / "data", secret)
    key = unquote(url.path.removeprefix(FILES_ROUTE))
    late = api.get(storage.signed_path(key, 120))
    assert late.status_code == 200
    assert 0 <= max_age(late) <= 120


def max_age(response: httpx.Response) -> int:
    directives = dict(
        part.strip().partition("=")[::2] for part in response.headers["cache-control"].split(",")
    )
    assert "private" in directives
    return int(directives["max-age"])


def test_unknown_job_is_404(api: httpx.Client) -> None:
    for job_id in ("j_" + "a" * 22, "nope", "j_../../x"):
        response = api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] in ("job_not_found", "not_found")


def test_health_ready_and_metrics(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    run(api, type="txt2img", prompt="counted", **FAST)
    text = api.get("/metrics").text
    assert 'latentq_jobs_submitted_total{model="tiny",type="txt2img"}' in text
    assert 'latentq_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'latentq_queue_depth{model="tiny",priority="normal"}' in text
    assert 'latentq_workers{model="tiny"} 1.0' in text


@pytest.mark.parametrize("n", [1, 3])
def test_progress_is_written_while_running(api: httpx.Client, n: int) -> None:
    job = submit(api, type="txt2img", prompt="progress", width=256, height=256, steps=12, n=n)
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = api.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] == "running":
            seen.add(current["progress"]["step"])
        if current["status"] == "succeeded":
            break
        time.sleep(0.02)
    assert current["status"] == "succeeded"
    assert current["progress"]["step"] == current["progress"]["total_steps"] == 12
    assert any(0 < step < 12 for step in seen), seen


def test_worker_serves_its_metrics_and_readiness(api: httpx.Client, service: object) -> None:
    from tests.integration.services import Service

    assert isinstance(service, Service)
    worker = next(p for p in service.processes if p.name == "worker-1")
    port = int(worker.env["LATENTQ_METRICS_PORT"])
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/readyz").status_code == 200
    run(api, type="txt2img", prompt="measured", **FAST)
    job = submit(api, type="txt2img", prompt="doomed", steps=2)
    api.delete(f"/v1/jobs/{job['id']}")
    text = httpx.get(f"{base}/metrics").text
    for series in (
        'latentq_worker_jobs_total{code="",model="tiny",status="succeeded",type="txt2img"}',
        'latentq_worker_job_duration_seconds_count{model="tiny",type="txt2img"}',
        'latentq_worker_step_seconds_count{model="tiny",type="txt2img"}',
        'latentq_worker_model_load_seconds{model="tiny"}',
        'latentq_worker_warm_models{model="tiny"} 1.0',
        'latentq_job_queued_seconds_count{model="tiny"}',
        "latentq_worker_batch_size_count",
    ):
        assert series in text, series
    succeeded = next(
        line
        for line in text.splitlines()
        if line.startswith('latentq_worker_jobs_total{code="",model="tiny",status="succeeded"')
    )
    assert float(succeeded.rsplit(" ", 1)[1]) >= 1


def test_logs_are_json_lines_with_job_and_request_ids(api: httpx.Client, service: object) -> None:
    import json as jsonlib

    from tests.integration.services import Service

    assert isinstance(service, Service)
    response = api.post(
        "/v1/jobs",
        json={"type": "txt2img", "prompt": "logged", **FAST},
        headers={"X-Request-ID": "req-logged-1"},
    )
    assert response.headers["x-request-id"] == "req-logged-1"
    job = wait(api, response.json()["id"])
    assert api.get("/healthz").headers["x-request-id"].startswith("r_")

    def lines(name: str) -> list[dict[str, object]]:
        log = next(p.log for p in service.processes if p.name == name)
        parsed = []
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                parsed.append(jsonlib.loads(line))
        return [entry for entry in parsed if entry.get("job_id") == job["id"]]

    api_lines, worker_lines = lines("api"), lines("worker-1")
    assert [e["status"] for e in api_lines] == ["queued"]
    assert [e["status"] for e in worker_lines] == ["running", "succeeded"]
    for entry in api_lines + worker_lines:
        assert entry["request_id"] == "req-logged-1"
        assert entry["model"] == "tiny" and entry["type"] == "txt2img"
        assert entry["level"] == "info" and entry["ts"]
    assert worker_lines[-1]["timings"]["run_s"] > 0  # type: ignore[index]


def test_img2img_keeps_the_size_and_follows_strength(api: httpx.Client) -> None:
    source = noise_image(72, 64, seed=12)  # not a multiple of 8 wide: run at 72, back to 72
    body = {
        "type": "img2img",
        "prompt": "restyled",
        "image": png_b64(source),
        "steps": 8,
        "seed": 21,
    }
    light = run(api, strength=0.25, **body)
    heavy = run(api, strength=1.0, **body)
    again = run(api, strength=0.25, **body)
    assert light["params"]["strength"] == 0.25
    assert light["progress"]["total_steps"] == 2 and heavy["progress"]["total_steps"] == 8
    light_px, heavy_px = pixels(api, light), pixels(api, heavy)
    assert light_px.shape == (64, 72, 3) == heavy_px.shape
    assert (light_px == pixels(api, again)).all()  # same seed, same pixels
    assert np.abs(light_px - heavy_px).mean() > 1  # the strength changes the result
    # The output starts from the input: another input, with the same seed, gives another image.
    other = run(api, **{**body, "image": png_b64(noise_image(72, 64, seed=13))}, strength=0.25)
    assert np.abs(pixels(api, other) - light_px).mean() > 1


def test_img2img_default_strength(api: httpx.Client) -> None:
    job = run(api, type="img2img", prompt="x", image=png_b64(noise_image(64, 64)), steps=4)
    assert job["params"]["strength"] == 0.75 and job["progress"]["total_steps"] == 3
