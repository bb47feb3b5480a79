"""Fixtures of the container tests: a Docker engine, the local base images, and the two images
of the Dockerfile built from them.

Every test module here is marked `containers` (and `slow`): `make test` runs them wherever a
Docker engine answers or can be started, and says loudly when neither is the case; `-m 'not
containers'` leaves them out by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata

import pytest

from tests.containers.engine import (
    DEBIAN_IMAGE,
    PYTHON_IMAGE,
    ROOT,
    Engine,
    build,
    ensure_debian_image,
    ensure_test_image,
    image_size,
)

API_IMAGE = "latentq-api:test"
WORKER_IMAGE = "latentq-worker:test-cpu"
WHEELHOUSE = ROOT / "deploy" / "docker" / "wheels"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = Engine.ensure()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def base_images(engine: Engine) -> None:
    """local/debian:bookworm (debootstrap) and the Python image on it."""
    ensure_debian_image()
    ensure_test_image("python", PYTHON_IMAGE)


@dataclass
class BuiltImages:
    api: str
    worker: str
    torch_version: str
    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def cpu_torch_wheel() -> str:
    """Copy the CPU build of torch into the wheelhouse; its version (`2.13.0+cpu`)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if not list(WHEELHOUSE.glob("torch-*.whl")):
        # The build this environment runs: the CPU one, from the machine's wheel folder.
        wanted = f"torch=={metadata.version('torch')}"
        download = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
        subprocess.run([*download, "-d", str(WHEELHOUSE), wanted], check=True, timeout=600)
    (wheel,) = WHEELHOUSE.glob("torch-*.whl")
    match = re.match(r"torch-([^-]+)-", wheel.name)
    assert match, wheel.name
    return match.group(1)


@pytest.fixture(scope="session")
def images(base_images: None) -> BuiltImages:
    """Both targets of the Dockerfile, built from the local bases with BuildKit.

    The api image on the local Python image; the worker on the local Debian image (in the
    CUDA image's place: its stage installs Python from the distribution's archive), with the
    CPU build of torch from the wheelhouse and no xformers. The rest comes from the package
    index, reached with the machine's CA bundle as the BuildKit secret `ca`.
    """
    torch_version = cpu_torch_wheel()
    built = BuiltImages(API_IMAGE, WORKER_IMAGE, torch_version)
    built.seconds["api"] = build(
        ROOT, "api", API_IMAGE, args={"PYTHON_IMAGE": PYTHON_IMAGE}, timeout=1200
    )
    built.seconds["worker"] = build(
        ROOT,
        "worker",
        WORKER_IMAGE,
        args={
            "CUDA_IMAGE": DEBIAN_IMAGE,
            "TORCH_INDEX_URL": "",
            "TORCH_VERSION": torch_version,
            "XFORMERS_VERSION": "",
        },
        timeout=1800,
    )
    for name, tag in (("api", API_IMAGE), ("worker", WORKER_IMAGE)):
        built.sizes[name] = image_size(tag)
    print(
        "\nimages: "
        + ", ".join(
            f"{name} {built.sizes[name] / 1e6:.0f} MB (built in {built.seconds[name]:.0f} s)"
            for name in ("api", "worker")
        )
    )
    return built
