"""A Docker engine for the container tests, and the local base images they build on.

No registry of container images is reachable from the machines these tests run on, so the
base images are made here: Debian bookworm by `debootstrap` from the Debian mirror apt already
uses, imported as `local/debian:bookworm`, and a Python image on top of it
(tests/containers/images/Dockerfile).

When no engine answers, the tests start `dockerd` themselves (as root, with the docker.io
package installed) and stop it at the end. Its bridge and the address pool of the stacks'
networks are set here, explicitly: containers get addresses in these ranges only.

`python -m tests.containers.engine check` tells `make test` whether the container tests can run
here (exit 0) or why not (exit 1, and a banner).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = ROOT / "var" / "containers"
IMAGES_DIR = Path(__file__).resolve().parent / "images"

DEBIAN_IMAGE = "local/debian:bookworm"
PYTHON_IMAGE = "local/python:3.11-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

# The engine's own bridge (docker0) and the pool compose networks are cut from (/24 each).
BRIDGE_IP = "10.201.0.1/24"
ADDRESS_POOL = "base=10.202.0.0/16,size=24"

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def docker_client() -> str:
    """The `docker` client that builds with BuildKit here.

    The docker.io package's client (/usr/bin/docker) has BuildKit built in; a newer client
    without its buildx plugin falls back to the legacy builder, which has no `--secret` and no
    `RUN --mount`.
    """
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("no docker client: apt-get install docker.io")


def docker_env() -> dict[str, str]:
    return {**os.environ, "DOCKER_BUILDKIT": "1"}


def run_tool(
    name: str,
    argv: list[str],
    args: tuple[str, ...],
    *,
    env: dict[str, str],
    timeout: float,
    check: bool,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`argv` + `args`, its output captured; with `check`, a failure raises with the end of
    its output, the command named `name` + `args`."""
    result = subprocess.run(
        [*argv, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{name} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_tool(
        "docker", [docker_client()], args, env=docker_env(), timeout=timeout, check=check
    )


def engine_reachable() -> bool:
    try:
        result = docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def why_not_available() -> str | None:
    """None when the container tests can run here, else the reason."""
    if engine_reachable():
        return None
    if shutil.which("dockerd") is None:
        return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers, and starting dockerd needs root"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    return None


@dataclass
class Engine:
    """A Docker engine: one that was running already, or a dockerd started here."""

    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def ensure(cls) -> Engine:
        if engine_reachable():
            return cls()
        reason = why_not_available()
        if reason is not None:
            raise RuntimeError(reason)
        WORKDIR.mkdir(parents=True, exist_ok=True)
        log = (WORKDIR / "dockerd.log").open("ab")
        # Low priority: the engine and what it builds share the machine with everything else.
        process = subprocess.Popen(
            [
                "nice",
                "-n",
                "10",
                "dockerd",
                "--bip",
                BRIDGE_IP,
                "--default-address-pool",
                ADDRESS_POOL,
                "--pidfile",
                str(WORKDIR / "dockerd.pid"),
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not engine_reachable():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (WORKDIR / "dockerd.log").read_text()[-3000:]
                raise RuntimeError(f"dockerd did not start\n{tail}")
            time.sleep(0.5)
        return cls(process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, timeout=30, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+\S+", text, re.MULTILINE
        )
        if found:
            return found.group(1)
    return DEBIAN_MIRROR


def ensure_debian_image() -> None:
    """local/debian:bookworm, from debootstrap (minbase, with CA certificates)."""
    if image_exists(DEBIAN_IMAGE):
        return
    rootfs = WORKDIR / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    subprocess.run(
        [
            "nice",
            "-n",
            "10",
            "debootstrap",
            "--variant=minbase",
            "--include=ca-certificates",
            "bookworm",
            str(rootfs),
            debian_mirror(),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        timeout=900,
    )
    # What an image does not need: downloaded packages, package lists, docs, translations.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/locale"):  # fmt: skip
        for entry in (rootfs / leftover).glob("*"):
            if entry.is_dir() and entry.name != "partial":
                shutil.rmtree(entry)
            elif entry.is_file():
                entry.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [docker_client(), "import", "-", DEBIAN_IMAGE],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
        timeout=300,
    )
    tar.wait()
    shutil.rmtree(rootfs)


def build(
    context: Path,
    target: str,
    tag: str,
    *,
    dockerfile: Path | None = None,
    args: dict[str, str] | None = None,
    timeout: float = 1200,
) -> float:
    """`docker build` with BuildKit and the machine's CA bundle as the secret `ca`; seconds."""
    command = ["build", "--target", target, "-t", tag]
    if dockerfile is not None:
        command += ["-f", str(dockerfile)]
    if CA_BUNDLE.is_file():
        command += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    for name, value in (args or {}).items():
        command += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    log = WORKDIR / f"build-{target}.log"
    WORKDIR.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            ["nice", "-n", "10", docker_client(), *command, str(context)],
            env=docker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"docker build --target {target} failed\n{log.read_text()[-5000:]}")
    return time.monotonic() - started


def ensure_test_image(target: str, tag: str) -> None:
    """One of tests/containers/images/Dockerfile's images, built when absent."""
    if not image_exists(tag):
        build(IMAGES_DIR, target, tag, args={"BASE_IMAGE": DEBIAN_IMAGE})


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def main(argv: list[str]) -> int:
    if argv[1:2] != ["check"]:
        print("usage: python -m tests.containers.engine check", file=sys.stderr)
        return 2
    reason = why_not_available()
    if reason is None:
        return 0
    line = "!" * 78
    print(
        f"\n{line}\n!! CONTAINER TESTS NOT RUN: {reason}.\n"
        f"!! tests/containers (images built, compose stack started) are deselected;\n"
        f"!! CI runs them (.ci/run installs docker.io and debootstrap).\n{line}\n",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
