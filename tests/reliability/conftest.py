"""Helpers of the reliability suite: an app served over real HTTP in a thread, and a study's
trials and views read back the way a user sees them."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.conftest import free_port, wait_for


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in this process; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, 30, "the in-process server to start", every=0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def get(http: httpx.Client, path: str) -> Any:
    reply = http.get(path)
    assert reply.status_code == 200, f"{path}: {reply.status_code} {reply.text[:300]}"
    # Exactly JSON: the trials' JSON Lines export (application/jsonl) is read as text.
    json_answer = reply.headers.get("content-type", "").split(";")[0] == "application/json"
    return reply.json() if json_answer else reply.text


def trials(http: httpx.Client, study_id: int) -> list[dict[str, Any]]:
    page: dict[str, Any] = get(http, f"/api/v1/studies/{study_id}/trials?limit=1000")
    items: list[dict[str, Any]] = page["items"]
    return items


def finished(http: httpx.Client, study_id: int, timeout: float) -> dict[str, Any]:
    """The study's view once it is no longer running."""

    def done() -> dict[str, Any] | None:
        study: dict[str, Any] = get(http, f"/api/v1/studies/{study_id}")
        return study if study["state"] != "running" else None

    study: dict[str, Any] = wait_for(done, timeout, f"study {study_id} to finish")
    return study


def wait_mid_way(http: httpx.Client, study_id: int = 1, timeout: float = 120) -> None:
    """Wait until a trial of the study is running past its first epoch (the study may not
    exist yet: `hpo submit` creates it)."""

    def mid_way() -> bool:
        page = http.get(f"/api/v1/studies/{study_id}/trials")
        items = page.json()["items"] if page.status_code == 200 else []
        return any(t["state"] == "running" and t["epochs"] >= 1 for t in items)

    wait_for(mid_way, timeout, "a trial mid-way", every=0.1)


def completed_once_each(
    http: httpx.Client, study_id: int, count: int, epochs: int
) -> list[dict[str, Any]]:
    """Assert that the study completed trials 0..count-1, each with the epochs 1..epochs once,
    none run more than twice (handed back once and resumed); returns the trials."""
    study = get(http, f"/api/v1/studies/{study_id}")
    assert study["state"] == "completed" and study["counts"]["completed"] == count, study
    rows = trials(http, study_id)
    assert sorted(t["number"] for t in rows) == list(range(count))
    for trial in rows:
        curve = get(http, f"/api/v1/trials/{trial['id']}")["curve"]
        assert [point["epoch"] for point in curve] == list(range(1, epochs + 1)), trial
    assert all(t["attempt"] <= 2 for t in rows), rows
    return rows


def every_view_answers(http: httpx.Client, study_id: int) -> None:
    """Every list and detail endpoint of the API (the page's included, read from the OpenAPI
    document, the event stream aside) answers 200 for the study and each of its trials."""
    listed = trials(http, study_id)
    trial_ids = [trial["id"] for trial in listed]
    for path, operations in get(http, "/openapi.json")["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        if "get" not in operations or path.endswith("/events") or names - {"study_id", "trial_id"}:
            continue
        if path == "/api/v1/trials/{trial_id}/model":  # a file only where a model is kept
            for trial in listed:
                reply = http.get(path.format(trial_id=trial["id"]))
                assert reply.status_code == (200 if trial["model_url"] else 404), reply.text
            continue
        for trial_id in trial_ids if "trial_id" in names else [None]:
            get(http, path.format(study_id=study_id, trial_id=trial_id))
