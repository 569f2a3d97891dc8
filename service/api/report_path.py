"""The batched report's short way through the server: `POST /api/v1/workers/{id}/reports`
answered by a pure ASGI middleware, before FastAPI's routing and request handling.

A worker with many trials sends this request several hundred times a second, and on a 2-core
box the server's CPU a request is what limits the trial-epochs it records. Of about 3.4 ms a
request (SQLite, 8 items), FastAPI's layer took about 0.9: its exception and exit-stack
middleware, matching the path against every route before this one, solving the route's
dependencies (the services, the worker token, the id) and its request wrapper. This
middleware does the same work for the request it recognizes, in the same order: the worker
token (`auth.worker_access`), the worker id in range (`deps.IdPath`), the body checked once
(`schemas.report_batch`), the domain call in the thread pool, the answer the route writes
(`workers.batch_answer`).

Only a request the route would take goes this way: a declared `Content-Length` (the body
limit outside has already refused one above the limit), a valid token where tokens are set,
an id in range and a body the fast check accepts. Anything else goes on to the app with its
body replayed, so every refusal (401, 404, 405, 413, 422 naming the field) is the route's
own answer. An exception of the domain call is answered by the app's handler for it (503 for
a busy database), as the route's would be. The route stays in the app, so the OpenAPI
schema documents it and a request this path hands on still reaches it; `MetricsMiddleware`
(outside) counts the request under the route's template.

Where the domain call runs: on the one writer thread of `report_groups`, which writes the
batches that wait for it together (a group commit; every batch's guarantees kept, see that
module); on PostgreSQL only a batch of at most `POSTGRES_GROUPED_ITEMS` items, and a larger
one in the app's thread pool, where up to `POSTGRES_SIDE_BY_SIDE` such batches of different
trials run side by side.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import auth, schemas, workers
from service.api.deps import Services
from service.api.limits import BodyTooLarge
from service.api.report_groups import ReportGroups
from service.api.workers import batch_answer

ROUTE = "/api/v1/workers/{worker_id}/reports"
_PATH = re.compile(r"/api/v1/workers/([1-9][0-9]{0,18})/reports")
_HEADERS = [(b"content-type", b"application/json")]


class BatchedReports:
    """Pure ASGI middleware: the batched report route's work for the requests it can take
    (see the module's docstring); every other request goes to `app` unchanged."""

    def __init__(self, app: ASGIApp, owner: FastAPI, groups: ReportGroups | None = None) -> None:
        self.app = app
        self.owner = owner  # its services, exception handlers and routes, read when called
        self.groups = groups  # the writer thread; None: the app's thread pool
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        if match is None or int(match.group(1)) > schemas.MAX_ID or not _declared(scope):
            await self.app(scope, receive, send)
            return
        services: Services = self.owner.state.services
        if auth.tokens_enabled(services.settings) and (
            auth.role_of(auth.presented(Request(scope)), services.settings) is None
        ):
            await self.app(scope, receive, send)  # the 401
            return
        try:
            body = await _read_body(receive)
        except BodyTooLarge as error:  # a body longer than it declared
            await JSONResponse({"detail": error.detail}, 413)(scope, receive, send)
            return
        if body is None:  # the client went away before its body came: no one to answer
            return
        try:
            items = schemas.report_batch(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # the 422 naming the field
            return
        scope["route"] = self.route()  # the metrics' route label, as routing sets it
        try:
            report_many = services.protocol.reporting.report_many
            if self.groups is None:
                outcomes = await run_in_threadpool(report_many, items)
            else:
                outcomes = await self.groups.report(report_many, items)
        except Exception as exc:
            response = await self._handled(scope, exc)
            await response(scope, receive, send)
            return
        answer = batch_answer(items, outcomes)
        headers = [*_HEADERS, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def route(self) -> Any:
        """The app's route of the batched report (what `scope["route"]` holds after routing)."""
        if self._route is None:
            self._route = next(
                r for r in workers.protocol_router.routes if getattr(r, "path", None) == ROUTE
            )
        return self._route

    async def _handled(self, scope: Scope, exc: Exception) -> Response:
        """The app's answer to `exc` (its exception handlers, by the exception's class);
        re-raises an exception it has no handler for (the server's 500)."""
        handlers = self.owner.exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise exc
        response = handler(Request(scope), exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response


def _declared(scope: Scope) -> bool:
    """Whether the request declares its body's length (not a chunked body)."""
    return any(name == b"content-length" for name, _ in scope["headers"])


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read given again first."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
