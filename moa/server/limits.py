"""The request body limit, as plain ASGI middleware: a ``Content-Length`` over the limit is
refused before anything is read, and a chunked body is counted as it arrives (413
``request_too_large`` either way; the endpoint never sees the body)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moa.errors import ErrorCode
from moa.server.errors import body


class TooLarge(HTTPException):
    """Raised while a body is read (FastAPI passes ``HTTPException`` through its body parsing)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than this server accepts ({max_bytes:,} bytes); send fewer or shorter items per run")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise TooLarge(self.max_bytes)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(body(ErrorCode.REQUEST_TOO_LARGE, str(TooLarge(self.max_bytes).detail))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
