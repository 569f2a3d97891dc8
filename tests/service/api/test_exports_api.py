"""A study's trials as CSV and JSON Lines: the same trials, params and values the API gives,
plus final metrics, durations and training time; read a page at a time."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from fastapi.testclient import TestClient

from service.domain.exports import Exports
from tests.conftest import USER_TOKEN, ApiWorker, spec_doc


def _study_with_trials(client: TestClient) -> dict[str, Any]:
    """A study of 4 trials: two completed, one failed with a NaN loss, one running."""
    study = client.post("/api/v1/studies", json=spec_doc("export-me")).json()
    worker = ApiWorker(client)
    first, second = worker.lease(2)
    assert worker.run(first, [0.5, 0.75]).status_code == 200
    for epoch, acc in enumerate([0.25, 0.5, 0.625], start=1):
        reply = worker.report(second, epoch, val_accuracy=acc, epoch_seconds=0.5 * epoch)
        assert reply.status_code == 200, reply.text
    assert worker.post(second, "complete").status_code == 200
    third, _running = worker.lease(2)
    assert worker.report(third, 1, val_accuracy=0.125, val_loss=math.nan).status_code == 200
    assert worker.post(third, "fail", reason="loss is NaN").status_code == 200
    return dict(study)


def _api_trials(client: TestClient, study_id: int) -> list[dict[str, Any]]:
    page = client.get(f"/api/v1/studies/{study_id}/trials?limit=1000").json()
    return list(page["items"])


def test_csv_has_every_trial_with_params_values_and_final_metrics(client: TestClient) -> None:
    study = _study_with_trials(client)
    reply = client.get(f"/api/v1/studies/{study['id']}/trials.csv")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert 'filename="export-me-trials.csv"' in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    trials = _api_trials(client, study["id"])
    assert [int(r["id"]) for r in rows] == [t["id"] for t in trials]
    assert "params_lr" in rows[0] and "params_norm" in rows[0]
    for row, trial in zip(rows, trials, strict=True):
        assert row["state"] == trial["state"]
        assert int(row["epochs"]) == trial["epochs"]
        assert row["params_norm"] == trial["params"]["norm"]
        assert float(row["params_lr"]) == trial["params"]["lr"]
        assert row["value"] == ("" if trial["value"] is None else repr(trial["value"]))
    by_number = {int(r["number"]): r for r in rows}
    assert float(by_number[0]["metrics_val_accuracy"]) == 0.75
    assert float(by_number[0]["metrics_val_loss"]) == 0.25  # ApiWorker.run reports 1 - acc
    assert by_number[0]["train_seconds"] == ""  # it reported no epoch_seconds
    assert float(by_number[1]["metrics_val_accuracy"]) == 0.625
    assert float(by_number[1]["train_seconds"]) == 3.0  # 0.5 + 1.0 + 1.5
    assert float(by_number[1]["duration_seconds"]) >= 0
    assert by_number[2]["state"] == "failed" and by_number[2]["reason"] == "loss is NaN"
    assert by_number[2]["metrics_val_loss"] == "nan"
    assert by_number[3]["state"] == "running" and by_number[3]["finished_at"] == ""


def test_jsonl_has_one_object_per_trial_matching_the_api(client: TestClient) -> None:
    study = _study_with_trials(client)
    reply = client.get(f"/api/v1/studies/{study['id']}/trials.jsonl")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in reply.text.splitlines()]
    trials = _api_trials(client, study["id"])
    assert len(lines) == len(trials) == 4
    for line, trial in zip(lines, trials, strict=True):
        for key in ("id", "number", "state", "value", "epochs", "params", "worker", "attempt"):
            assert line[key] == trial[key], key
    assert lines[1]["metrics"] == {"val_accuracy": 0.625, "epoch_seconds": 1.5}
    assert lines[1]["train_seconds"] == 3.0
    assert lines[2]["metrics"] == {"val_accuracy": 0.125, "val_loss": None}  # NaN: null


def test_export_of_a_missing_study_is_404(client: TestClient) -> None:
    for suffix in ("csv", "jsonl"):
        reply = client.get(f"/api/v1/studies/999/trials.{suffix}")
        assert reply.status_code == 404
        assert reply.json() == {"detail": "study 999 not found"}


def test_exports_need_the_user_token(secured: TestClient) -> None:
    study = secured.post(
        "/api/v1/studies",
        json=spec_doc("secret"),
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    ).json()
    path = f"/api/v1/studies/{study['id']}/trials.csv"
    assert secured.get(path).status_code == 401
    reply = secured.get(path, headers={"Authorization": f"Bearer {USER_TOKEN}"})
    assert reply.status_code == 200
    assert reply.text.startswith("id,number,state,value")
    # the page's download links carry its session cookie instead of a header
    secured.post("/api/v1/session", json={"token": USER_TOKEN}).raise_for_status()
    assert secured.get(path).text == reply.text


def test_records_are_read_a_page_at_a_time_in_number_order(client: TestClient) -> None:
    study = _study_with_trials(client)
    db = client.app.state.services.db  # type: ignore[attr-defined]
    paged = Exports(db, page_size=1)
    numbers = [record.row.number for record in paged.records(study["id"])]
    assert numbers == [0, 1, 2, 3]
    columns = paged.columns(study["id"])
    assert columns.params == ["lr", "norm"]
    assert columns.metrics == ["epoch_seconds", "val_accuracy", "val_loss"]
