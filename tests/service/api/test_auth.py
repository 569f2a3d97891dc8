"""Tokens: every route x {no token, worker token, user token} gives the documented status."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.conftest import USER_TOKEN as USER
from tests.conftest import WORKER_TOKEN as WORKER
from tests.conftest import spec_doc

OPEN = {("GET", "/api/v1/session"), ("POST", "/api/v1/session")}


def _routes(client: TestClient) -> list[tuple[str, str, bool]]:
    """(method, path with ids filled in, is a worker-protocol route) for every API route, as
    the OpenAPI document lists them."""
    out = []
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        if not template.startswith("/api/v1"):
            continue
        path = re.sub(r"\{checkpoint_id\}", "0" * 32, template)
        path = re.sub(r"\{[a-z_]+\}", "1", path)
        for method, operation in operations.items():
            out.append((method.upper(), path, "worker protocol" in operation.get("tags", [])))
    return out


def _call(client: TestClient, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, path, headers=headers, json={}).status_code


def test_every_route_needs_a_token(secured: TestClient) -> None:
    routes = _routes(secured)
    assert len(routes) >= 20
    for method, path, _ in routes:
        if (method, path) in OPEN:
            continue
        assert _call(secured, method, path, None) == 401, (method, path)
        assert _call(secured, method, path, "wrong") == 401, (method, path)
    assert secured.get("/healthz").status_code == 200


def test_worker_token_opens_the_worker_protocol_only(secured: TestClient) -> None:
    for method, path, worker in _routes(secured):
        if (method, path) in OPEN:
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
