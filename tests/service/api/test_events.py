"""GET /api/v1/studies/{id}/events: server-sent events in the order things happened, resumable
with Last-Event-ID, NaN sent as null."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import ApiWorker, spec_doc


def _read(
    client: TestClient, study_id: int, count: int, last_id: int | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """The first `count` events of the stream (after `last_id`), with the raw lines read."""
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    lines: list[str] = []
    events: list[dict[str, Any]] = []
    block: dict[str, str] = {}
    with client.stream("GET", f"/api/v1/studies/{study_id}/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            lines.append(line)
            if line:
                field, _, value = line.partition(": ")
                block[field] = value
                continue
            if "data" in block:
                data = json.loads(block["data"])
                assert data["id"] == int(block["id"]) and data["kind"] == block["event"]
                events.append(data)
            block = {}
            if len(events) == count:
                break
    return lines, events


def _one_trial(client: TestClient) -> int:
    """A study whose trial 0 starts, reports epochs 1 and 2 (val_loss NaN at 1), completes."""
    study = client.post("/api/v1/studies", json=spec_doc()).json()
    worker = ApiWorker(client, "w1")
    (trial,) = worker.lease()
    worker.report(trial, 1, val_accuracy=0.5, val_loss=float("nan"))
    worker.report(trial, 2, val_accuracy=0.75, val_loss=0.4)
    assert worker.post(trial, "complete").status_code == 200
    study_id: int = study["id"]
    return study_id


def test_events_come_in_order(client: TestClient) -> None:
    study_id = _one_trial(client)
    lines, events = _read(client, study_id, 5)
    assert lines[0] == "retry: 2000"
    assert [e["kind"] for e in events] == [
        "study_state",
        "trial_started",
        "trial_reported",
        "trial_reported",
        "trial_finished",
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 5
    started, first, second, finished = events[1:]
    assert started["number"] == 0 and started["worker"] == "w1"
    assert {first["trial_id"], second["trial_id"], finished["trial_id"]} == {started["trial_id"]}
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert first["metrics"] == {"val_accuracy": 0.5, "val_loss": None}  # NaN as null
    assert second["metrics"] == {"val_accuracy": 0.75, "val_loss": 0.4}
    assert finished["state"] == "completed" and finished["value"] == 0.75


def test_last_event_id_resumes_after_that_event(client: TestClient) -> None:
    study_id = _one_trial(client)
    _, events = _read(client, study_id, 5)
    _, resumed = _read(client, study_id, 3, last_id=events[1]["id"])
    assert resumed == events[2:]
    # later events reach a client that resumes from the last one it saw
    worker = ApiWorker(client, "w2")
    (trial,) = worker.lease()
    _, more = _read(client, study_id, 1, last_id=events[-1]["id"])
    assert more[0]["kind"] == "trial_started" and more[0]["trial_id"] == trial["trial_id"]
    assert more[0]["id"] > events[-1]["id"]


def test_streams_of_two_studies_stay_apart(client: TestClient) -> None:
    first = _one_trial(client)
    second = client.post("/api/v1/studies", json=spec_doc("s2")).json()["id"]
    _, events = _read(client, second, 1)
    assert events[0]["kind"] == "study_state" and events[0]["state"] == "running"
    _, all_first = _read(client, first, 5)
    assert events[0]["id"] > all_first[-1]["id"]


def test_unknown_study_and_bad_last_event_id_are_refused(client: TestClient) -> None:
    assert client.get("/api/v1/studies/99/events").status_code == 404
    study_id = client.post("/api/v1/studies", json=spec_doc()).json()["id"]
    reply = client.get(f"/api/v1/studies/{study_id}/events", headers={"Last-Event-ID": "x"})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["header", "last-event-id"]
