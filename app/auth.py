"""API keys: who is calling, and the open mode when no key is configured.

Keys are configured hashed — `LATENTQ_API_KEYS="alice:<sha256 hex>,bob:<sha256 hex>"`, made
with `python -m app.keys new NAME` — so the settings never hold a usable secret. A caller is
the name of its key; jobs belong to the caller that submitted them. An entry may end with
the key's scopes (`app.scopes`).

With no key configured the service is open: every caller is `anonymous`, and `/v1` answers
only requests from loopback addresses (unless `LATENTQ_ALLOW_OPEN=true`, for a service
behind a proxy that authenticates). A request counts as loopback only when its peer and
every address a proxy forwarded it for are loopback, and open mode refuses to start when
uvicorn would take `X-Forwarded-For` from anyone (`FORWARDED_ALLOW_IPS=*`): a client could
then name itself 127.0.0.1. A loopback address is not enough either: a web page in the
user's browser reaches loopback too. So open mode also answers only requests whose `Host`
is a loopback name (or one of `LATENTQ_OPEN_HOSTS`), which a page that rebinds its own name
to 127.0.0.1 cannot send, and whose `Origin`, when a browser sends one, is the service's own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app import scopes
from app.errors import envelope
from jobs.errors import Unauthorized

ANONYMOUS = "anonymous"

_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63}):(?P<hash>[0-9a-f]{64})(?::(?P<scopes>.*))?$"
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, spec: str, default_scopes: str = "") -> None:
        self._names: dict[str, str] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        default = scopes.parse_scopes(default_scopes)
        for raw in filter(None, (part.strip() for part in spec.split(","))):
            match = _ENTRY.match(raw)
            if match is None:
                raise ValueError(
                    "LATENTQ_API_KEYS entries are NAME:SHA256HEX[:SCOPES] (python -m app.keys new "
                    "NAME); "
                    f"got {raw[:24]!r}…"
                )
            if "change-me" in raw.lower() or set(match["hash"]) == {"0"}:
                raise ValueError(
                    "LATENTQ_API_KEYS still holds the example's placeholder; make real entries "
                    "with python -m app.keys new NAME"
                )
            self._names[match["hash"]] = match["name"]
            given = match["scopes"]
            try:
                self._scopes[match["name"]] = (
                    default if given is None else scopes.parse_scopes(given)
                )
            except ValueError as exc:
                raise ValueError(f"LATENTQ_API_KEYS entry {match['name']}: {exc}") from None

    @property
    def enabled(self) -> bool:
        return bool(self._names)

    def name_for(self, key: str) -> str | None:
        return self._names.get(hash_key(key))

    def scopes_of(self, name: str) -> frozenset[str]:
        """A caller's scopes. In open mode the one caller may use every priority, but is no
        admin: it reads the jobs submitted in open mode, not those of keys that may share its
        Redis."""
        return self._scopes.get(name, frozenset()) if self.enabled else scopes.OPEN_MODE


def caller(request: Request) -> str:
    """The calling key's name (`anonymous` in open mode); 401 without a valid key."""
    ring: KeyRing = request.app.state.latentq.keys
    if not ring.enabled:
        return ANONYMOUS
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="latentq"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'", headers=challenge)
    name = ring.name_for(token.strip())
    if name is None:
        raise Unauthorized("this API key is not valid", code="invalid_api_key", headers=challenge)
    return name


CallerDep = Annotated[str, Depends(caller)]


def operator(request: Request, name: CallerDep) -> bool:
    """Whether the caller is the service's operator, who may see which worker (host and
    process) ran a job: a key with the `admin` scope; in open mode on loopback every caller
    (they are on this machine), but not in open mode behind a proxy."""
    state = request.app.state.latentq
    if state.keys.enabled:
        return scopes.ADMIN in state.keys.scopes_of(name)
    return not state.settings.allow_open


OperatorDep = Annotated[bool, Depends(operator)]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*"?\[?([^\]",;\s]+)', re.IGNORECASE)


def _forwarded_for(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """Every client address that proxies named in the request's headers."""
    found: list[str] = []
    for name, raw in headers:
        value = raw.decode("latin-1")
        if name in (b"x-forwarded-for", b"x-real-ip"):
            found.extend(part.strip() for part in value.split(",") if part.strip())
        elif name == b"forwarded":
            found.extend(_FORWARDED_FOR.findall(value))
    # `host:port` (IPv4 with a port; IPv6 came unbracketed above) to the bare address.
    return [a.rsplit(":", 1)[0] if a.count(":") == 1 else a for a in found]


def trusts_every_forwarder(spec: str) -> bool:
    """True when a FORWARDED_ALLOW_IPS value lets any peer set the client's address."""
    for item in (part.strip() for part in spec.split(",")):
        if item == "*":
            return True
        try:
            if ipaddress.ip_network(item, strict=False).prefixlen == 0:
                return True
        except ValueError:
            continue
    return False


def _host_name(netloc: str) -> str:
    """`name:port`, `[v6]:port` or a bare name to the lower-case name."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")].lower() if "]" in netloc else ""
    return netloc.rsplit(":", 1)[0].lower() if netloc.count(":") == 1 else netloc.lower()


class OpenModeGuard:
    """Without API keys, `/v1` answers loopback clients only, addressed by a loopback name
    (or one of `hosts`), from no other web origin."""

    def __init__(self, app: ASGIApp, enabled: bool, hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.enabled = enabled
        self.hosts = {"localhost", *(h.strip().lower() for h in hosts if h.strip())}

    def _allowed_name(self, name: str) -> bool:
        return name in self.hosts or name.endswith(".localhost") or _is_loopback(name)

    def _refusal(self, scope: Scope) -> tuple[str, str] | None:
        """(code, message) when the request may not use open mode."""
        client = scope.get("client")
        # A proxy on this host is a loopback peer: whoever it forwards for must be too.
        addresses = [client[0]] if client is not None else []
        addresses += _forwarded_for(scope["headers"])
        if not all(_is_loopback(address) for address in addresses):
            return (
                "open_mode",
                "this service has no API keys configured, so it answers only on loopback; "
                "set LATENTQ_API_KEYS (or LATENTQ_ALLOW_OPEN=true behind a proxy that "
                "authenticates)",
            )
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get(b"host")
        if host is not None and not self._allowed_name(_host_name(host.strip())):
            return (
                "host_not_allowed",
                f"this service has no API keys configured, so it answers only to loopback "
                f"names such as localhost, not {host!r}; add the name to LATENTQ_OPEN_HOSTS "
                "if it is this machine's",
            )
        origin = headers.get(b"origin")
        if origin is not None and (host is None or urlsplit(origin.strip()).netloc != host.strip()):
            return (
                "cross_origin",
                f"this service has no API keys configured, so it answers no other web page "
                f"(Origin {origin!r}); use the playground it serves, or a client that is not "
                "a browser",
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and scope["path"].startswith("/v1"):
            refusal = self._refusal(scope)
            if refusal is not None:
                await envelope(403, *refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)
