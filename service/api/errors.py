"""Domain errors and validation errors as HTTP answers: `{"detail": ...}` with a 4xx status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Route

from service.api.schemas import Problem
from service.domain.errors import Conflict, DomainError, InvalidInput, NotFound, StorageFailed

STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, StorageFailed: 507}
# Seconds a client should wait before retrying when the database is busy or unreachable.
RETRY_AFTER = 1
log = logging.getLogger("hpo.server")

# The error answers any route may give, documented once for the whole API (OpenAPI `responses`).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body could not be parsed"},
    401: {"model": Problem, "description": "a token is required and was missing or wrong"},
    403: {"model": Problem, "description": "the worker token cannot use this route"},
    404: {"model": Problem, "description": "no such study, trial, worker or checkpoint"},
    413: {"model": Problem, "description": "the body is larger than the limit"},
    503: {"model": Problem, "description": "the database is busy or unreachable: retry"},
}

# The same answers with their JSON body spelled out, for a route whose own media type is another:
# FastAPI documents a `model` response in the route's media type (an SSE route's errors would
# read as text/event-stream, while every error is a JSON {detail}).
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": doc["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for code, doc in COMMON_ERRORS.items()
}


def validation_details(errors: list[Any], prefix: tuple[str, ...] = ("body",)) -> list[dict]:
    """Pydantic errors reduced to what a user needs: where (`loc`), why (`msg`), and `type`."""
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in errors
    ]


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error (also an item's status in a batched answer)."""
    return next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidInput):
        detail: Any = [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


def _pydantic_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return JSONResponse(
        {"detail": validation_details(exc.errors(include_url=False))}, status_code=422
    )


def _request_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database is locked past the busy timeout, unreachable, or out of connections: the
    request may succeed later, so 503 with `Retry-After` (workers' clients honour it)."""
    log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return JSONResponse(
        {"detail": "the database is busy or unreachable; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405 lists in `Allow` the methods of every route on the
    path (Starlette names only those of the first route that matched the path)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
            for method in route.methods or ()
        }
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(ValidationError, _pydantic_error)
    app.add_exception_handler(RequestValidationError, _request_error)
