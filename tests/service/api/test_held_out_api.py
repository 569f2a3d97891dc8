"""A completed trial's held-out test metrics (issue 13 item 3): sent with the completion, stored
as sent, shown in the study's `best` and the trial detail, and never used to choose anything.
Runs on SQLite and PostgreSQL (the `client` fixture)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from fastapi.testclient import TestClient

from hpo.study import BestTrial
from tests.conftest import ApiWorker, spec_doc

HELD_OUT = {"test_accuracy": 0.8125, "test_loss": 0.53125}
NO_SPLIT = {"unavailable": "the dataset has no test split (test_fraction 0 and none given)"}


def _study(client: TestClient, name: str = "held-out", trials: int = 2) -> dict[str, Any]:
    budget = {"max_trials": trials, "parallel_trials": trials, "epochs": 2}
    reply = client.post("/api/v1/studies", json=spec_doc(name, budget=budget))
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _complete(worker: ApiWorker, trial: dict[str, Any], values: list[float], **body: Any) -> Any:
    for epoch, value in enumerate(values, start=1):
        reply = worker.report(trial, epoch, val_accuracy=value, val_loss=1 - value)
        assert reply.status_code == 200, reply.text
    return worker.post(trial, "complete", **body)


def test_completion_stores_test_metrics_shown_in_best_and_trial_detail(
    client: TestClient,
) -> None:
    study = _study(client, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = _complete(worker, trial, [0.5, 0.75], test_metrics=HELD_OUT)
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "completed"

    shown = client.get(f"/api/v1/studies/{study['id']}").json()
    assert shown["best"]["trial_id"] == trial["trial_id"]
    assert shown["best"]["value"] == 0.75  # the validation score: what selected it
    assert shown["best"]["test_metrics"] == HELD_OUT
    assert BestTrial.model_validate(shown["best"]).test_metrics == HELD_OUT  # hpo.Study.best
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["test_metrics"] == HELD_OUT
    # The test split is no curve metric: no epoch carries it.
    assert all("test_accuracy" not in point["metrics"] for point in detail["curve"])


def test_an_older_worker_completes_without_test_metrics(client: TestClient) -> None:
    study = _study(client, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = _complete(worker, trial, [0.5, 0.625])
    assert reply.status_code == 200 and reply.json()["state"] == "completed"
    best = client.get(f"/api/v1/studies/{study['id']}").json()["best"]
    assert best["value"] == 0.625 and best["test_metrics"] is None
    assert client.get(f"/api/v1/trials/{trial['trial_id']}").json()["test_metrics"] is None


def test_a_dataset_without_a_test_split_says_why(client: TestClient) -> None:
    study = _study(client, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert _complete(worker, trial, [0.5], test_metrics=NO_SPLIT).status_code == 200
    best = client.get(f"/api/v1/studies/{study['id']}").json()["best"]
    assert best["test_metrics"] == NO_SPLIT
    assert "test_accuracy" not in best["test_metrics"]
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["test_metrics"] == NO_SPLIT


def test_selection_and_order_ignore_test_metrics(client: TestClient) -> None:
    """Test scores that rank the trials the other way round change neither the best trial nor
    its value, nor the order of the trials."""
    study = _study(client)
    worker = ApiWorker(client)
    first, second = worker.lease(2)
    high_val = {"test_accuracy": 0.25, "test_loss": 2.0}
    low_val = {"test_accuracy": 0.99, "test_loss": 0.01}
    assert _complete(worker, first, [0.5, 0.9], test_metrics=high_val).status_code == 200
    assert _complete(worker, second, [0.5, 0.6], test_metrics=low_val).status_code == 200

    shown = client.get(f"/api/v1/studies/{study['id']}").json()
    assert shown["state"] == "completed"
    assert shown["best"]["number"] == first["number"] and shown["best"]["value"] == 0.9
    assert shown["best"]["test_metrics"] == high_val
    table = f"/api/v1/dashboard/studies/{study['id']}/trials"
    by_value = client.get(table, params={"sort": "value", "order": "desc"}).json()
    assert [t["number"] for t in by_value["items"]] == [first["number"], second["number"]]
    # The page's table offers no test-metric order to select by.
    refused = client.get(table, params={"sort": "test_accuracy", "order": "desc"})
    assert refused.status_code == 422, refused.text


def test_malformed_test_metrics_are_refused_naming_the_field(client: TestClient) -> None:
    study = _study(client, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    bad = [
        ({"test_accuracy": 0.5}, "test_metrics"),  # a number without its loss
        ({"test_accuracy": 1.5, "test_loss": 0.1}, "test_accuracy"),
        ({"test_accuracy": 0.5, "test_loss": -1.0}, "test_loss"),
        ({"test_accuracy": 0.5, "test_loss": 0.1, "unavailable": "both"}, "test_metrics"),
        ({"unavailable": ""}, "unavailable"),
        ({"accuracy": 0.5}, "accuracy"),
        ("0.5", "test_metrics"),
    ]
    for value, field in bad:
        reply = _complete(worker, trial, [0.5], test_metrics=value)
        assert reply.status_code == 422, (value, reply.text)
        locations = [item["loc"] for item in reply.json()["detail"]]
        assert any("test_metrics" in loc and field in loc for loc in locations), (value, reply.text)
    # Nothing was stored or finished by a refused completion.
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["state"] == "running" and detail["test_metrics"] is None
    assert client.get(f"/api/v1/studies/{study['id']}").json()["best"] is None


def test_exports_carry_test_metrics_where_present(client: TestClient) -> None:
    study = _study(client, trials=3)
    worker = ApiWorker(client)
    first, second, third = worker.lease(3)
    assert _complete(worker, first, [0.5], test_metrics=HELD_OUT).status_code == 200
    assert _complete(worker, second, [0.25], test_metrics=NO_SPLIT).status_code == 200
    assert _complete(worker, third, [0.125]).status_code == 200
    reply = client.get(f"/api/v1/studies/{study['id']}/trials.csv")
    rows = {int(r["number"]): r for r in csv.DictReader(io.StringIO(reply.text))}
    first_row, second_row, third_row = (rows[t["number"]] for t in (first, second, third))
    assert float(first_row["metrics_test_accuracy"]) == 0.8125
    assert float(first_row["metrics_test_loss"]) == 0.53125
    assert first_row["metrics_test_unavailable"] == ""
    assert second_row["metrics_test_accuracy"] == ""
    assert second_row["metrics_test_unavailable"] == NO_SPLIT["unavailable"]
    assert third_row["metrics_test_accuracy"] == third_row["metrics_test_unavailable"] == ""
    lines = client.get(f"/api/v1/studies/{study['id']}/trials.jsonl").text.splitlines()
    by_number = {line["number"]: line for line in map(json.loads, lines)}
    assert by_number[first["number"]]["metrics"] == {
        "val_accuracy": 0.5,
        "val_loss": 0.5,
        **HELD_OUT,
    }
