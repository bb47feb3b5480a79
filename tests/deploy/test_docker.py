"""The Dockerfile, its build context and the pinned requirements of the images."""

from __future__ import annotations

import ast
import fnmatch
import http.server
import json
import re
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import DEPLOY, ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
TORCH_STACK = {
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "peft",
    "imageio",
    "imageio-ffmpeg",
    "scipy",
}
"""What the API image must not install: the worker's side (DESIGN.md: app/ never imports it)."""


# ---- parsing -------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments out."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    result = []
    for line in lines:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


class Stage:
    def __init__(self, name: str, base: str) -> None:
        self.name = name
        self.base = base
        self.body: list[tuple[str, str]] = []

    def last(self, instruction: str) -> str | None:
        found = [args for word, args in self.body if word == instruction]
        return found[-1] if found else None

    def all(self, instruction: str) -> list[str]:
        return [args for word, args in self.body if word == instruction]


def stages() -> dict[str, Stage]:
    """The build stages by name, their base image with global ARG defaults substituted."""
    global_args: dict[str, str] = {}
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for word, args in instructions():
        if word == "ARG" and current is None:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif word == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], match.group(1))
            current = Stage(match.group(2), base)
            result[current.name] = current
        elif current is not None:
            current.body.append((word, args))
    return result


def lineage(all_stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    chain = [all_stages[name]]
    while chain[-1].base in all_stages:
        chain.append(all_stages[chain[-1].base])
    return chain


def copied_from_context(all_stages: dict[str, Stage]) -> set[str]:
    """Every build-context path a COPY of any stage names (COPY --from excluded), and every
    path a RUN bind-mounts from the context."""
    sources: set[str] = set()
    for stage in all_stages.values():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            parts = [p for p in args.split() if not p.startswith("--")]
            sources.update(p.rstrip("/") for p in parts[:-1])
        for args in stage.all("RUN"):
            for mount in re.findall(r"--mount=(\S+)", args):
                options = dict(o.partition("=")[::2] for o in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.add(options["source"].rstrip("/"))
    return sources


# ---- hadolint ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    result = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    """The linter is not a no-op: a Dockerfile with known faults fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\n")
    result = run([tool("hadolint"), "--no-color", str(bad)])
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3008" in result.stdout


# ---- the two targets -----------------------------------------------------------------------


def test_api_target() -> None:
    all_stages = stages()
    assert "api" in all_stages, "target api"
    api = all_stages["api"]
    assert api.base.startswith("python:3.11-slim"), api.base
    chain = [s for s in all_stages.values() if s.base == api.base]
    text = " ".join(
        args for stage in chain for word, args in stage.body if word in ("RUN", "COPY", "ENV")
    ).lower()
    for package in TORCH_STACK | {"xformers"}:
        assert package not in text, f"the API image must not install {package}"
    builds = [s for s in chain if any("--no-deps" in a for a in s.all("RUN"))]
    assert builds, "the project goes into the API image with pip install --no-deps"
    copied = {p for s in chain for p in copied_from_context({s.name: s})}
    assert {"jobs", "app", "deploy/docker"} <= copied
    assert "worker" not in copied
    assert json.loads(api.last("CMD") or "null") == [
        "uvicorn", "--factory", "app.main:create_app",
        "--host", "0.0.0.0", "--port", "8000", "--proxy-headers",
    ]  # fmt: skip
    healthcheck = api.last("HEALTHCHECK") or ""
    assert "127.0.0.1:8000/healthz" in healthcheck
    assert_non_root(api)


def test_worker_target() -> None:
    all_stages = stages()
    assert "worker" in all_stages, "target worker"
    chain = lineage(all_stages, "worker")
    assert chain[-1].base.startswith("nvidia/cuda:"), chain[-1].base
    worker = chain[0]
    build = [s for s in all_stages.values() if s.base == chain[1].name and s is not worker]
    body = " ".join(a for s in chain + build for w, a in s.body if w in ("RUN", "ARG", "ENV"))
    assert "python3.11" in body
    assert re.search(r"--index-url\s+\"?\$\{TORCH_INDEX_URL\}", body)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu" in body
    assert '"torch==${TORCH_VERSION}"' in body
    assert "[cuda]" in body, "the project is installed with its cuda extra (xformers)"
    assert json.loads(worker.last("CMD") or "null") == ["python", "-m", "worker"]
    healthcheck = worker.last("HEALTHCHECK") or ""
    assert "127.0.0.1:9100/readyz" in healthcheck
    env = " ".join(worker.all("ENV"))
    assert "HF_HOME=/cache/huggingface" in env
    assert_non_root(worker)


def assert_non_root(stage: Stage) -> None:
    user = stage.last("USER")
    assert user is not None, f"stage {stage.name} sets USER"
    uid = user.split(":")[0]
    assert uid not in ("0", "root"), f"stage {stage.name} runs as root"


def test_no_model_weights_in_the_images() -> None:
    copied = copied_from_context(stages())
    for path in copied:
        assert not path.startswith(("var", "models", ".")), f"COPY {path}"
        assert not re.search(r"\.(safetensors|bin|ckpt|pt|pth|onnx)$", path), f"COPY {path}"


def test_builds_need_no_registry_beyond_the_base_images() -> None:
    """No `# syntax=` frontend image to pull; the bases are build arguments with the public
    images as defaults."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    args = build_args_global()
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    for word, rest in instructions():
        if word == "FROM":
            base = rest.split()[0]
            assert base.startswith("${") or base in stages(), f"FROM {base}: a build argument"


def test_every_pip_install_takes_the_wheelhouse_and_the_ca_secret() -> None:
    runs = [args for stage in stages().values() for args in stage.all("RUN")]
    installs = [args for args in runs if "pip install" in args or "pip-install.sh" in args]
    assert len(installs) >= 5
    for args in installs:
        assert "pip install" not in args, f"pip install outside pip-install.sh: {args}"
        assert "--mount=type=secret,id=ca" in args, args
        assert "--mount=type=bind,source=deploy/docker,target=/build" in args, args
    script = (DEPLOY / "docker" / "pip-install.sh").read_text()
    assert "--find-links /build/wheels" in script
    assert "PIP_CERT=/run/secrets/ca" in script
    assert (DEPLOY / "docker" / "wheels" / "README.md").is_file()


def test_pip_install_script(tmp_path: Path) -> None:
    """The script's options reach pip as documented: a fake pip records its arguments."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pip").write_text('#!/bin/sh\necho "$@" > "$OUT"; env | grep ^PIP_ >> "$OUT"; true\n')
    (fake / "pip").chmod(0o755)
    script = str(DEPLOY / "docker" / "pip-install.sh")
    base = {"PATH": f"{fake}:/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    assert run(["sh", script, "x==1"], env={**base, "PIP_INDEX_URL": ""}).returncode == 0
    out = (tmp_path / "out").read_text()
    assert out.splitlines()[0] == "install --no-cache-dir --find-links /build/wheels x==1"
    assert "PIP_INDEX_URL" not in out
    env = {**base, "PIP_INDEX_URL": "https://mirror.example/simple", "WHEELS_ONLY": "1"}
    assert run(["sh", script, "x==1"], env=env).returncode == 0
    out = (tmp_path / "out").read_text()
    assert "--no-index" in out.splitlines()[0]
    assert "PIP_INDEX_URL=https://mirror.example/simple" in out


def build_args_global() -> dict[str, str]:
    """ARG defaults before the first FROM (the ones FROM lines may use)."""
    result: dict[str, str] = {}
    for word, args in instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = args.partition("=")
            result[name] = default
    return result


# ---- pinned requirements -------------------------------------------------------------------


def project_dependencies() -> dict[str, Requirement]:
    """The runtime dependencies, with the `s3` extra: both images can store in a bucket."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["s3"]]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned(path: Path) -> dict[str, Requirement]:
    """Requirements of a requirements file, following -r includes."""
    result: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            result.update(pinned(path.parent / line[3:].strip()))
            continue
        req = Requirement(line)
        result[canonicalize_name(req.name)] = req
    return result


def assert_pins_satisfy(pins: dict[str, Requirement], wanted: dict[str, Requirement]) -> None:
    for name, req in pins.items():
        (spec,) = list(req.specifier)
        assert spec.operator == "==", f"{name} is pinned exactly: {req}"
        assert req.specifier.contains(spec.version)
        assert wanted[name].specifier.contains(spec.version), (
            f"{name}=={spec.version} is outside pyproject.toml's {wanted[name]}"
        )
        assert wanted[name].extras <= req.extras, f"{name} keeps its extras {wanted[name]}"


def test_api_requirements_follow_pyproject() -> None:
    deps = project_dependencies()
    pins = pinned(DEPLOY / "docker" / "requirements-api.txt")
    expected = {name for name in deps if name not in TORCH_STACK}
    assert set(pins) == expected, "requirements-api.txt: pyproject.toml's deps but torch's"
    assert_pins_satisfy(pins, deps)


def test_worker_requirements_follow_pyproject() -> None:
    deps = project_dependencies()
    pins = pinned(DEPLOY / "docker" / "requirements-worker.txt")
    # torch comes from the PyTorch index in the Dockerfile, pinned by TORCH_VERSION.
    assert set(pins) == set(deps) - {"torch"}, "requirements-worker.txt: all deps but torch"
    assert_pins_satisfy(pins, deps)
    args = build_args()
    assert deps["torch"].specifier.contains(args["TORCH_VERSION"])
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert [canonicalize_name(Requirement(r).name) for r in extras["cuda"]] == ["xformers"]
    assert re.fullmatch(r"\d+(\.\d+)+(\.post\d+)?", args["XFORMERS_VERSION"])


def build_args() -> dict[str, str]:
    """ARG defaults of every stage."""
    return {
        name: default
        for stage in stages().values()
        for name, _, default in (a.partition("=") for a in stage.all("ARG"))
    }


# ---- what each image's code imports is in that image ---------------------------------------

FIRST_PARTY = {"jobs", "app", "worker", "client"}


def imports(packages: list[str]) -> set[str]:
    """Top-level modules imported anywhere in these first-party packages."""
    found: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Distributions these requirements install, following installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        name, extras = key
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                stack.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


def assert_image_has_imports(
    packages: list[str], copied: set[str], requirements: list[Requirement]
) -> None:
    modules = imports(packages)
    first_party = modules & FIRST_PARTY
    assert first_party <= copied, f"{packages} import {first_party - copied}, not copied"
    provided = installed_closure(requirements)
    owners = metadata.packages_distributions()
    for module in sorted(modules - FIRST_PARTY):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{module} (imported by {packages}) is not installed here"
        assert dists & provided, f"{module} is imported by {packages} but not in the image"


def test_api_image_has_what_app_and_jobs_import() -> None:
    all_stages = stages()
    chain = [s for s in all_stages.values() if s.base == all_stages["api"].base]
    copied = {p for s in chain for p in copied_from_context({s.name: s})}
    reqs = list(pinned(DEPLOY / "docker" / "requirements-api.txt").values())
    assert_image_has_imports(["app", "jobs"], copied, reqs)


def test_worker_image_has_what_worker_and_jobs_import() -> None:
    all_stages = stages()
    chain = lineage(all_stages, "worker")
    copied = {
        p
        for s in all_stages.values()
        for p in copied_from_context({s.name: s})
        if s.base == chain[1].name
    }
    reqs = list(pinned(DEPLOY / "docker" / "requirements-worker.txt").values())
    reqs += [Requirement("torch"), Requirement("xformers")]
    assert_image_has_imports(["worker", "jobs"], copied, reqs)


# ---- the build context ---------------------------------------------------------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = fnmatch.translate(pattern)
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:])
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        "var/redis/appendonly.aof",
        "var/signing.key",
        ".git/HEAD",
        "tests/unit/test_catalog.py",
        "tests/deploy/test_docker.py",
        ".pytest_cache/v/cache/lastfailed",
        "test-artifacts/report.xml",
        "bench/results/run.json",
        "jobs/__pycache__/catalog.cpython-311.pyc",
        "deploy/k8s/base/secrets.env",
        "deploy/compose/secrets.env",
        "deploy/local/run.sh",
        "latentq.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(path, patterns), f".dockerignore lets {path} in"
    copied = copied_from_context(stages())
    assert copied, "the Dockerfile copies something"
    for source in sorted(copied):
        target = ROOT / source
        assert target.exists(), f"COPY {source}: no such path"
        files = [target] if target.is_file() else [p for p in target.rglob("*.py")]
        assert files, f"COPY {source} copies no Python file"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert not dockerignore_excludes(relative, patterns), f".dockerignore drops {relative}"


# ---- the health check script ---------------------------------------------------------------


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the handler API's name)
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_healthcheck_script(status_server: str) -> None:
    script = str(DEPLOY / "docker" / "healthcheck.py")
    assert run([sys.executable, script, f"{status_server}/ok"]).returncode == 0
    assert run([sys.executable, script, f"{status_server}/readyz"]).returncode == 1
    assert run([sys.executable, script, "http://127.0.0.1:9/"]).returncode == 1
