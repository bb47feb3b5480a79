"""deploy/nginx/nginx.conf: `nginx -t` accepts it, and a real nginx running it on the
loopback streams job events unbuffered, forwards the client's address and scheme, passes
bodies up to the API's limit and answers its own errors as JSON envelopes."""

from __future__ import annotations

import http.client
import http.server
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.procs import free_port
from tests.deploy.helpers import DEPLOY, ROOT, run, tool

CONF = DEPLOY / "nginx" / "nginx.conf"
MIB = 2**20


def local_logs(text: str, prefix: Path) -> str:
    """The config with its logs in `prefix`: /dev/stderr and /dev/stdout are the container's
    log streams, which a test process may not be allowed to reopen (e.g. under su)."""
    text = text.replace("error_log /dev/stderr", f"error_log {prefix}/error.log")
    return text.replace("access_log /dev/stdout", f"access_log {prefix}/access.log")


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(local_logs(CONF.read_text(), tmp_path))
    result = run([tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(conf), "-g",
                  f"pid {tmp_path}/nginx.pid;"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_rejects_a_broken_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    text = local_logs(CONF.read_text(), tmp_path)
    conf.write_text(text.replace("proxy_buffering off;", "proxy_buffering of;"))
    result = run([tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(conf), "-g",
                  f"pid {tmp_path}/nginx.pid;"])  # fmt: skip
    assert result.returncode != 0


def locations() -> dict[str, str]:
    """location argument -> its block's text (blocks nest braces one level deep at most)."""
    blocks = re.finditer(r"location\s+([^{]+)\{((?:[^{}]|\{[^{}]*\})*)\}", CONF.read_text())
    return {m.group(1).strip(): m.group(2) for m in blocks}


def directive(block: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", block, re.MULTILINE)


def test_the_directives_a_proxy_of_this_api_needs() -> None:
    text = CONF.read_text()
    (size,) = directive(text, "client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) >= 48
    headers = {h.split()[0] for h in directive(text, "proxy_set_header")}
    assert {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Host"} <= headers
    events = [block for loc, block in locations().items() if "events" in loc]
    assert len(events) == 1, "one location for the job events"
    assert directive(events[0], "proxy_buffering") == ["off"]
    (read_timeout,) = directive(events[0], "proxy_read_timeout")
    assert int(read_timeout.rstrip("s")) >= 3600
    # The upstream is the compose API service on its port.
    (target,) = directive(text, r"set \$latentq_api")
    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert target == f"http://api:{api['expose'][0]}"


def test_the_events_location_matches_only_event_streams() -> None:
    (pattern,) = [loc for loc in locations() if "events" in loc]
    regex = pattern.removeprefix("~").strip()
    assert re.search(regex, "/v1/jobs/j_Xr12ab/events")
    assert not re.search(regex, "/v1/jobs/j_Xr12ab")
    assert not re.search(regex, "/v1/jobs/j_Xr12ab/events/x")


# ---- a real nginx on the loopback ----------------------------------------------------------


class FakeApi(http.server.BaseHTTPRequestHandler):
    """Stands in for the API: an event stream that waits between its two events, and an
    echo of the request headers."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (the handler API's name)
        if self.path.endswith("/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.chunk(b'event: progress\ndata: {"step": 1}\n\n')
            # The second event comes only once the client has seen the first.
            self.release.wait(10)
            self.chunk(b"event: end\ndata: {}\n\n")
            self.chunk(b"")
            return
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


class FakeS3(FakeApi):
    """Stands in for MinIO: echoes the path and headers of every request it gets."""

    def do_GET(self) -> None:  # noqa: N802 (the handler API's name)
        body = json.dumps({"s3": self.path, **dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = do_DELETE = do_GET  # noqa: N815 (a write must never get here)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """nginx resets idle upstream connections when it is done with them: not news."""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nginx running the compose config, its API upstream swapped for FakeApi and its MinIO
    for FakeS3."""
    nginx = tool("nginx")
    api = QuietServer(("127.0.0.1", 0), FakeApi)
    s3 = QuietServer(("127.0.0.1", 0), FakeS3)
    for server in (api, s3):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    text = local_logs(CONF.read_text(), prefix)
    text = text.replace("http://api:8000", f"http://127.0.0.1:{api.server_address[1]}")
    text = text.replace("http://minio:9000", f"http://127.0.0.1:{s3.server_address[1]}")
    text = text.replace("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;")
    temp = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    assert str(port) in text and "127.0.0.1:" in text
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", f"daemon off; pid {prefix}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _, err = process.communicate(timeout=5)
                    pytest.fail(f"nginx did not start: {err.decode()}")
                time.sleep(0.05)
        yield port
    finally:
        FakeApi.release.set()
        process.terminate()
        process.wait(timeout=10)
        for server in (api, s3):
            server.shutdown()
            server.server_close()


def test_events_stream_through_unbuffered(proxy: int) -> None:
    FakeApi.release.clear()
    with socket.create_connection(("127.0.0.1", proxy), timeout=5) as conn:
        conn.sendall(
            b"GET /v1/jobs/j_abc/events HTTP/1.1\r\nHost: latentq.test\r\n"
            b"Accept: text/event-stream\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        # The upstream holds the second event back until this first one has arrived: a proxy
        # that held the stream back (response buffering with gzip, a cache) would deliver
        # nothing and this read would time out.
        received = read_until(conn, b"event: progress")
        assert received.startswith(b"HTTP/1.1 200")
        assert b"content-type: text/event-stream" in received.lower()
        assert b"event: end" not in received
        FakeApi.release.set()
        read_until(conn, b"event: end")


def read_until(conn: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def test_forwarded_headers_reach_the_api(proxy: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    connection.request("GET", "/v1/models", headers={"Host": f"latentq.test:{proxy}"})
    response = connection.getresponse()
    assert response.status == 200
    seen = {k.lower(): v for k, v in json.loads(response.read()).items()}
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["host"] == f"latentq.test:{proxy}"
    connection.close()


def test_nginx_errors_are_json_envelopes(proxy: int) -> None:
    # A body over every limit is refused from its Content-Length, before it is sent.
    connection = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    connection.putrequest("POST", "/v1/jobs")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(64 * MIB))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "payload_too_large"
    connection.close()


def test_presigned_bucket_urls_reach_minio_read_only(proxy: int) -> None:
    """MinIO's port is not published: result URLs presigned for nginx's address come through
    with the Host the signature covers, and nothing but GET and HEAD gets to the bucket."""
    path = "/latentq/jobs/anonymous/j_abc/0.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab"
    host = f"latentq.test:{proxy}"
    connection = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    assert response.status == 200
    seen = {k.lower(): v for k, v in json.loads(response.read()).items()}
    assert seen["s3"] == path
    assert seen["host"] == host
    for method in ("PUT", "POST", "DELETE"):
        connection.request(method, "/latentq/jobs/anonymous/j_abc/0.png", body=b"x")
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 403, method
        assert body["error"]["code"] == "forbidden"
    connection.close()


@pytest.mark.parametrize(
    "path",
    ["/metrics", "/metrics?x=1", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"],
)
def test_metrics_and_docs_are_not_proxied_to_the_world(proxy: int, path: str) -> None:
    """Prometheus scrapes each replica directly on the stack's network; through the public
    entry point these are not found."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 404, f"{path} reached the API"
    assert body["error"]["code"] == "not_found"
    connection.close()
