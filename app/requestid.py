"""Request ids: taken from `X-Request-ID` (or made up), echoed back, and in every log line."""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import logs

HEADER = "x-request-id"


def _usable(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isprintable() and value.isascii()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), ""
        )
        request_id = given if _usable(given) else "r_" + secrets.token_hex(8)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = logs.request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
