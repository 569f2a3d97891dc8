"""Tokens: every route x {no token, worker token, user token} gives the documented status."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Mount

from tests.conftest import USER_TOKEN as USER
from tests.conftest import WORKER_TOKEN as WORKER
from tests.conftest import spec_doc

# What answers without a token when tokens are set: the page's shell and its static files (the
# page must load to ask for the token), the token exchange itself, and the health check. The API
# schema and its readers (/openapi.json, /docs, /redoc) are not public: they need the user token.
OPEN = {("GET", "/api/v1/session"), ("POST", "/api/v1/session")}
PUBLIC = {("GET", "/"), ("GET", "/healthz")}
STATIC = [
    "/static/js/app.js",
    "/static/style.css",
    "/static/vendor/swagger-ui/swagger-ui-bundle.js",
]


def _served(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every endpoint among `routes`, the included routers' too (the static mount apart)."""
    for route in routes:
        included = getattr(route, "original_router", None)  # how FastAPI keeps include_router
        if included is not None:
            yield from _served(included.routes)
        elif isinstance(route, APIRoute):
            yield route
        else:
            assert isinstance(route, Mount) and route.path == "/static", route


def _routes(client: TestClient) -> list[tuple[str, str, bool]]:
    """(method, path with ids filled in, is a worker-protocol route) for every route the app
    serves, as the app itself lists them."""
    out = []
    for route in _served(client.app.routes):  # type: ignore[attr-defined]
        path = re.sub(r"\{checkpoint_id\}", "0" * 32, route.path)
        path = re.sub(r"\{[a-z_]+\}", "1", path)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, path, "worker protocol" in route.tags))
    return out


def test_the_routes_listed_are_every_route_served(secured: TestClient) -> None:
    templates = {route.path for route in _served(secured.app.routes)}  # type: ignore[attr-defined]
    assert {"/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc"} <= templates
    schema = secured.get("/openapi.json", headers={"Authorization": f"Bearer {USER}"}).json()
    assert set(schema["paths"]) <= templates
    assert len(schema["paths"]) >= 20


def _call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, headers=headers, json={}).status_code


def test_every_route_needs_a_token(secured: TestClient) -> None:
    routes = _routes(secured)
    assert len(routes) >= 20
    for method, path, _ in routes:
        if (method, path) in OPEN | PUBLIC:
            continue
        assert _call(secured, method, path, None) == 401, (method, path)
        assert _call(secured, method, path, "wrong") == 401, (method, path)


def test_only_the_pages_shell_and_the_health_check_are_public(secured: TestClient) -> None:
    assert secured.get("/healthz").json() == {"status": "ok"}
    shell = secured.get("/")
    assert shell.status_code == 200
    assert "<title>hpo</title>" in shell.text
    for path in STATIC:
        assert secured.get(path).status_code == 200, path
    for path in ("/openapi.json", "/docs", "/redoc", "/metrics"):
        assert secured.get(path).status_code == 401, path


def test_the_user_token_or_the_pages_cookie_opens_the_api_docs(secured: TestClient) -> None:
    user = {"Authorization": f"Bearer {USER}"}
    assert secured.get("/openapi.json", headers=user).json()["info"]["title"] == "hpo"
    assert secured.get("/docs", headers={"Authorization": f"Bearer {WORKER}"}).status_code == 403
    secured.post("/api/v1/session", json={"token": USER}).raise_for_status()
    docs = secured.get("/docs")
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "/static/vendor/redoc/redoc.standalone.js" in secured.get("/redoc").text
    # nothing on these pages comes from another host
    for page in (docs.text, secured.get("/redoc").text):
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), page


def test_worker_token_opens_the_worker_protocol_only(secured: TestClient) -> None:
    for method, path, worker in _routes(secured):
        if (method, path) in OPEN | PUBLIC:
            continue
        status = _call(secured, method, path, WORKER)
        if worker:
            assert status not in (401, 403), (method, path, status)
        else:
            assert status == 403, (method, path, status)


def test_user_token_opens_everything(secured: TestClient) -> None:
    for method, path, _ in _routes(secured):
        assert _call(secured, method, path, USER) not in (401, 403), (method, path)


def test_worker_token_cannot_create_stop_or_delete(secured: TestClient) -> None:
    user = {"Authorization": f"Bearer {USER}"}
    worker = {"Authorization": f"Bearer {WORKER}"}
    assert secured.post("/api/v1/studies", json=spec_doc(), headers=worker).status_code == 403
    study = secured.post("/api/v1/studies", json=spec_doc(), headers=user).json()
    for action in ("stop", "resume"):
        assert (
            secured.post(f"/api/v1/studies/{study['id']}/{action}", headers=worker).status_code
            == 403
        )
    assert secured.delete(f"/api/v1/studies/{study['id']}", headers=worker).status_code == 403
    reply = secured.post("/api/v1/workers/register", json={"name": "w"}, headers=worker)
    assert reply.status_code == 201
    wid = reply.json()["worker_id"]
    lease = secured.post(f"/api/v1/workers/{wid}/lease", json={"count": 1}, headers=worker)
    assert len(lease.json()["assignments"]) == 1


def test_page_session_cookie_stands_for_the_user_token(secured: TestClient) -> None:
    assert secured.get("/api/v1/session").json() == {"required": True, "valid": False}
    assert secured.post("/api/v1/session", json={"token": WORKER}).status_code == 401
    assert secured.get("/api/v1/studies").status_code == 401
    assert secured.post("/api/v1/session", json={"token": USER}).status_code == 204
    assert secured.get("/api/v1/session").json() == {"required": True, "valid": True}
    assert secured.get("/api/v1/studies").status_code == 200


def test_without_tokens_everything_is_open(client: TestClient) -> None:
    assert client.get("/api/v1/session").json() == {"required": False, "valid": True}
    assert client.get("/api/v1/studies").status_code == 200
