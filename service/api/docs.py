"""The API's schema and its two readers, Swagger UI (`/docs`) and ReDoc (`/redoc`), served from the
package: their scripts and styles are vendored under `service/web/vendor/`, so the docs work on a
machine with no internet. All three need the user token when tokens are set, like the API they
describe (a browser sends the page's session cookie); only the page's shell, its static files
and `/healthz` are public.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from service.api.auth import user_access

VENDOR = "/static/vendor"
SCHEMA = "/openapi.json"
FAVICON = "/static/favicon.svg"

router = APIRouter(dependencies=[Depends(user_access)], include_in_schema=False)


@router.get(SCHEMA)
def schema(request: Request) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=SCHEMA,
        title=f"{request.app.title} API",
        swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=FAVICON,
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=SCHEMA,
        title=f"{request.app.title} API",
        redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
        redoc_favicon_url=FAVICON,
        with_google_fonts=False,
    )
