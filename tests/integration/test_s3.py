"""S3 storage against a real S3-compatible server on loopback.

MinIO has no package installable on these machines, so the server is moto's standalone
(server) mode: a real HTTP S3 endpoint that boto3 — in the API and worker processes — talks
to over the network like any other.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from PIL import Image

from bench.procs import free_port
from jobs.storage import S3Storage
from tests.images import noise_image, png_b64
from tests.integration.helpers import run
from tests.integration.services import RedisServer, Service, service_env, write_catalog

BUCKET = "latentq-images"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def s3_service(
    s3_endpoint: str,
    redis_server: RedisServer,
    tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("s3")
    catalog = write_catalog(workdir / "models.toml", tiny_model)
    env = service_env(
        f"redis://127.0.0.1:{redis_server.port}/10",
        workdir / "data",
        catalog,
        LATENTQ_STORAGE="s3",
        LATENTQ_S3_BUCKET=BUCKET,
        LATENTQ_S3_ENDPOINT_URL=s3_endpoint,
        LATENTQ_S3_PREFIX="latentq",
        **CREDENTIALS,
    )
    svc = Service(redis=redis_server, workdir=workdir, env=env)
    try:
        svc.start_worker("s3-worker")
        svc.start_api()
        svc.wait_for_workers("tiny", 1)
        yield svc
    finally:
        svc.stop()


def client(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_results_are_presigned_urls_of_the_bucket(s3_service: Service, s3_endpoint: str) -> None:
    with httpx.Client(base_url=s3_service.base_url, timeout=30) as api:
        job = run(api, type="txt2img", prompt="in a bucket", width=64, height=64, steps=2, seed=4)
        url = job["result"]["images"][0]["url"]
        assert url.startswith(s3_endpoint + f"/{BUCKET}/latentq/anonymous/{job['id']}/0.png")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
        response = httpx.get(url)
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).size == (64, 64)
        # Nothing was written to local files.
        assert not (s3_service.workdir / "data" / "anonymous").exists()
        # The API's own file route does not serve bucket objects.
        assert (
            api.get(
                f"/v1/files/anonymous/{job['id']}/0.png", params={"expires": "1", "sig": "x"}
            ).status_code
            == 404
        )


def test_inputs_go_to_the_bucket_under_tenant_and_job(
    s3_service: Service, s3_endpoint: str
) -> None:
    source = noise_image(64, 64, seed=9)
    with httpx.Client(base_url=s3_service.base_url, timeout=30) as api:
        job = run(
            api,
            type="outpaint",
            prompt="wider",
            image=png_b64(source),
            outpaint={"right": 32},
            steps=2,
            mask_blur=0,
        )
        listed = client(s3_endpoint).list_objects_v2(  # type: ignore[attr-defined]
            Bucket=BUCKET, Prefix=f"latentq/anonymous/{job['id']}/"
        )
        names = sorted(item["Key"].rsplit("/", 1)[1] for item in listed["Contents"])
        assert names == ["0.png", "input-image.png"]
        out = np.asarray(
            Image.open(io.BytesIO(httpx.get(job["result"]["images"][0]["url"]).content)).convert(
                "RGB"
            )
        )
        assert out.shape == (64, 96, 3)
        assert (out[:, :40] == np.asarray(source)[:, :40]).all()


def test_purge_deletes_old_objects(s3_endpoint: str) -> None:
    storage = S3Storage(client(s3_endpoint), BUCKET, prefix="purge-test")
    storage.put("alice/j_1/0.png", b"one")
    storage.put("alice/j_1/1.png", b"two")
    storage.put("bob/j_2/0.png", b"three")
    assert storage.get("bob/j_2/0.png") == b"three"
    assert storage.purge_jobs(older_than_s=3600) == 0
    import time

    assert storage.purge_jobs(older_than_s=0, now=time.time() + 10) == 2
    listed = client(s3_endpoint).list_objects_v2(  # type: ignore[attr-defined]
        Bucket=BUCKET, Prefix="purge-test/"
    )
    assert listed.get("Contents", []) == []


def test_a_public_base_url_replaces_presigning(s3_endpoint: str) -> None:
    storage = S3Storage(
        client(s3_endpoint), BUCKET, prefix="p", public_url="https://cdn.example.com/images/"
    )
    assert storage.url("alice/j_1/0.png", 60, "ignored") == (
        "https://cdn.example.com/images/p/alice/j_1/0.png"
    )


def test_presigned_urls_can_name_a_public_endpoint(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.settings import Settings
    from jobs.storage import make_storage

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        storage="s3",
        s3_bucket=BUCKET,
        s3_endpoint_url=s3_endpoint,
        s3_public_endpoint_url="https://s3.example.com",
    )
    storage = make_storage(settings)
    storage.put("alice/j_9/0.png", b"x")  # written through the inside endpoint
    url = storage.url("alice/j_9/0.png", 60, "ignored")
    assert url.startswith(f"https://s3.example.com/{BUCKET}/alice/j_9/0.png?")
