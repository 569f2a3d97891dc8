"""What the end-to-end tests ask a real server over HTTP, as a user would: one helper each."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import wait_for

__all__ = ["FreshConnections", "create_study", "finished", "get", "study_trials"]


def get(url: str, path: str) -> Any:
    """The JSON answer of GET `url` + `path`."""
    return httpx.get(url + path, timeout=30).json()


def create_study(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    """POST the spec `doc` and return the created study (asserts 201, with the answer)."""
    reply = httpx.post(url + "/api/v1/studies", json=doc, timeout=30)
    assert reply.status_code == 201, reply.text
    study: dict[str, Any] = reply.json()
    return study


def study_trials(url: str, study_id: int) -> list[dict[str, Any]]:
    """The study's trials by number (up to 1000, one page)."""
    page = get(url, f"/api/v1/studies/{study_id}/trials?limit=1000")
    items: list[dict[str, Any]] = page["items"]
    return items


def finished(url: str, study_id: int, timeout: float) -> dict[str, Any]:
    """The study once it is no longer running; fails the test after `timeout` seconds."""

    def done() -> dict[str, Any] | None:
        study = get(url, f"/api/v1/studies/{study_id}")
        return study if study["state"] != "running" else None

    study: dict[str, Any] = wait_for(done, timeout, f"study {study_id} to finish")
    return study


class FreshConnections:
    """`post` on a new connection each time, so that the kernel spreads the requests over the
    processes of an `hpo server --processes N` (a client for `tests.conftest.ApiWorker`)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=60, **kwargs)
