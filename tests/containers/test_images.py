"""Both images of the Dockerfile, built for real, and what is (and is not) in them; the CUDA
worker's pinned requirements resolved by pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers.conftest import BuiltImages
from tests.containers.engine import CA_BUNDLE, ROOT, docker
from tests.deploy.test_docker import TORCH_STACK, build_args

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(3600)]


def run_in(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", "--network", "none", "--entrypoint", command[0], image,
                  *command[1:], timeout=180)  # fmt: skip


def test_api_image_serves_without_torch(images: BuiltImages) -> None:
    modules = sorted(TORCH_STACK | {"xformers"})
    probe = (
        "import importlib.util, json, sys;"
        f"print(json.dumps({{m: bool(importlib.util.find_spec(m.replace('-', '_')))"
        f" for m in {modules!r}}}))"
    )
    found = json.loads(run_in(images.api, "python", "-c", probe).stdout)
    assert not any(found.values()), f"the api image has {[m for m, f in found.items() if f]}"
    # The application itself is there and imports (the settings are read later, at start).
    run_in(images.api, "python", "-c", "import app.main, jobs.protocol")
    assert run_in(images.api, "id", "-u").stdout.strip() == "10001"
    assert images.sizes["api"] < 600e6, f"the api image is {images.sizes['api'] / 1e6:.0f} MB"


def test_worker_image_has_cpu_torch_and_the_worker(images: BuiltImages) -> None:
    probe = (
        "import torch, diffusers, worker.main, worker.demo_model;"
        "print(torch.__version__, torch.get_num_threads() > 0)"
    )
    out = run_in(images.worker, "python", "-c", probe).stdout.split()
    assert out == [images.torch_version, "True"]
    assert run_in(images.worker, "id", "-u").stdout.strip() == "10001"
    # The wheelhouse was used: the CPU build came from it, not from the index (which has only
    # CUDA builds of torch for Linux, several GB).
    assert images.torch_version.endswith("+cpu")
    assert images.sizes["worker"] < 2.5e9, f"worker image {images.sizes['worker'] / 1e6:.0f} MB"


def test_build_secret_leaves_no_trace(images: BuiltImages) -> None:
    """The CA bundle reached pip through the BuildKit secret: in no layer, no variable."""
    for image in (images.api, images.worker):
        assert (
            run_in(image, "sh", "-c", "test ! -e /run/secrets/ca && echo absent").stdout.strip()
            == "absent"
        )
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        assert "PIP_CERT=" not in history and "ca-certificates.crt" not in history
        env = docker("image", "inspect", "--format", "{{json .Config.Env}}", image).stdout
        assert "PIP_CERT" not in env


def test_cuda_worker_requirements_resolve(tmp_path: Path) -> None:
    """The CUDA worker's pins (torch and xformers from build arguments, the rest from
    requirements-worker.txt) resolve together on the public index (pip --dry-run: metadata
    only, no wheel is downloaded). This machine is the image's platform: Linux x86_64, glibc,
    Python 3.11; only the wheel folder it installs the CPU torch from is left out."""
    args = build_args()
    report = tmp_path / "report.json"
    # --isolated: none of this machine's pip configuration (its local wheel folder and
    # indexes), only the public index.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
        "--quiet", "--report", str(report),
        "-r", str(ROOT / "deploy" / "docker" / "requirements-worker.txt"),
        f"torch=={args['TORCH_VERSION']}", f"xformers=={args['XFORMERS_VERSION']}",
    ]  # fmt: skip
    if CA_BUNDLE.is_file():
        command[4:4] = ["--cert", str(CA_BUNDLE)]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    installs = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert installs["torch"] == args["TORCH_VERSION"], installs["torch"]
    assert installs["xformers"] == args["XFORMERS_VERSION"]
    cuda_libraries = [name for name in installs if name.startswith("nvidia-")]
    assert cuda_libraries, "the Linux torch of the index brings its CUDA libraries"
    print(f"\nCUDA worker: {len(installs)} distributions, {len(cuda_libraries)} nvidia-*")
