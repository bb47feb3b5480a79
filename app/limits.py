"""Request body limit, enforced while the body streams in."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import envelope
from jobs.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Refuses a body over `limit` bytes: at once when Content-Length says so, else as soon as
    the streamed bytes pass it (the route's read then raises `PayloadTooLarge`)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                # bytes.isdigit() is ASCII-only; a length past any limit is not converted.
                if value.isdigit() and (len(value) > 18 or int(value) > self.limit):
                    response = envelope(
                        413,
                        PayloadTooLarge.code,
                        f"the request body is larger than {self.limit} bytes",
                    )
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(f"the request body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
