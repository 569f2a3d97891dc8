"""Bearer tokens: `HPO_API_TOKEN` for users, `HPO_WORKER_TOKEN` for workers.

With no token configured every route is open (the server then listens on loopback only). With
tokens, a request without a valid one gets 401, and the worker token opens the worker protocol
only (403 elsewhere). Public on purpose: `/healthz`, the page's shell (`/` and `/static/`, which
must load to ask for the token) and the token exchange below; the API schema and its docs
(`/openapi.json`, `/docs`, `/redoc`) need the user token like the API (service.api.docs).
The page cannot set headers on its event stream, so it trades the token for an HttpOnly,
SameSite=Strict cookie once (`POST /api/v1/session`), accepted like the header.
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from service.api.deps import get_settings
from service.settings import Settings

COOKIE = "hpo_token"
SettingsDep = Annotated[Settings, Depends(get_settings)]


class Role(str, Enum):
    USER = "user"
    WORKER = "worker"


def presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


def role_of(token: str | None, settings: Settings) -> Role | None:
    """The role a token grants, comparing against both tokens in constant time."""
    if token is None:
        return None
    encoded = token.encode()
    user = settings.api_token is not None and hmac.compare_digest(
        encoded, settings.api_token.encode()
    )
    worker = settings.worker_token is not None and hmac.compare_digest(
        encoded, settings.worker_token.encode()
    )
    if user:
        return Role.USER
    return Role.WORKER if worker else None


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=401,
        detail="missing or invalid token: send `Authorization: Bearer <token>`",
        headers={"WWW-Authenticate": "Bearer"},
    )


def tokens_enabled(settings: Settings) -> bool:
    return bool(settings.api_token or settings.worker_token)


async def user_access(request: Request, settings: SettingsDep) -> None:
    """Users' routes: the user token only."""
    if not tokens_enabled(settings):
        return
    role = role_of(presented(request), settings)
    if role is None:
        raise _unauthorized()
    if role is not Role.USER:
        raise HTTPException(status_code=403, detail="the worker token cannot use this route")


async def worker_access(request: Request, settings: SettingsDep) -> None:
    """The worker protocol: the worker token, or the user token."""
    if tokens_enabled(settings) and role_of(presented(request), settings) is None:
        raise _unauthorized()


class SessionRequest(BaseModel):
    # Tokens travel in headers and cookies: visible ASCII only.
    token: str = Field(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")


router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post("/session", status_code=204, responses={401: {"description": "wrong token"}})
def open_session(body: SessionRequest, settings: SettingsDep, response: Response) -> Response:
    """Trade the user token for a session cookie (what the page does, once)."""
    if tokens_enabled(settings) and role_of(body.token, settings) is not Role.USER:
        raise _unauthorized()
    response.status_code = 204
    response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict")
    return response


@router.get("/session", responses={401: {"description": "no valid token"}})
def session_state(request: Request, settings: SettingsDep) -> dict[str, bool]:
    """Whether the page needs to ask for a token: `{"required": ..., "valid": ...}`."""
    required = tokens_enabled(settings)
    valid = not required or role_of(presented(request), settings) is Role.USER
    return {"required": required, "valid": valid}
