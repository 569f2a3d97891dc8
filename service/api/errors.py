"""Domain errors and validation errors as HTTP answers: `{"detail": ...}` with a 4xx status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.domain.errors import Conflict, DomainError, InvalidInput, NotFound, StorageFailed

STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, StorageFailed: 507}


def validation_details(errors: list[Any], prefix: tuple[str, ...] = ("body",)) -> list[dict]:
    """Pydantic errors reduced to what a user needs: where (`loc`), why (`msg`), and `type`."""
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in errors
    ]


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidInput):
        detail: Any = [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
    return JSONResponse({"detail": str(exc)}, status_code=status)


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(ValidationError, _pydantic_error)
    app.add_exception_handler(RequestValidationError, _request_error)
