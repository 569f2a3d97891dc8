"""Request body size limits, enforced before a route reads the body.

A body declared larger than its limit (`Content-Length`) is answered 413 at once, unread; a body
without a declared length (chunked) is counted as it streams in and refused with 413 as soon as
it passes the limit. Checkpoint and model uploads (`PUT .../checkpoint`, `PUT .../model`) have
their own, larger limit.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: `max_bytes` for every request body, `checkpoint_bytes` for
    checkpoint uploads."""

    def __init__(self, app: ASGIApp, max_bytes: int, checkpoint_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.checkpoint_bytes = checkpoint_bytes

    def limit_for(self, scope: Scope) -> int:
        if scope["method"] == "PUT" and scope["path"].endswith(("/checkpoint", "/model")):
            return self.checkpoint_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = BodyTooLarge(limit)
            await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI's handler answers 413
            return message

        await self.app(scope, counted, send)
