"""A completion that carries the trial's last epoch reports (POST .../trials/{id}/complete with
`reports`): recorded as the report route records them, in the same request, before the trial
completes; an answer of theirs that ends the trial (prune, pause) wins. And the lease's
`report_interval`, which says when a worker may hold reports and send them together. SQLite and
PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, spec_doc

MEDIAN = {"kind": "random", "seed": 0, "early_stopping": "median"}


def _study(client: TestClient, **overrides: Any) -> dict[str, Any]:
    reply = client.post("/api/v1/studies", json=spec_doc(**overrides))
    assert reply.status_code == 201, reply.text
    return reply.json()


def _reports(*values: tuple[int, float]) -> list[dict[str, Any]]:
    return [{"epoch": e, "metrics": {"val_accuracy": v, "val_loss": 1 - v}} for e, v in values]


def _detail(client: TestClient, trial: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    return detail


def _curve(client: TestClient, trial: dict[str, Any]) -> list[tuple[int, float]]:
    return [(p["epoch"], p["metrics"]["val_accuracy"]) for p in _detail(client, trial)["curve"]]


def test_the_last_reports_are_recorded_and_the_trial_completes(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.report(trial, 1, val_accuracy=0.5).json()["decision"] == "continue"
    reply = worker.post(trial, "complete", reports=_reports((2, 0.6), (3, 0.7)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "completed" and reply.json()["value"] == 0.7
    assert _curve(client, trial) == [(1, 0.5), (2, 0.6), (3, 0.7)]
    detail = _detail(client, trial)
    assert detail["epochs"] == 3 and detail["value"] == 0.7
    # The repeat of a completion whose answer was lost: the same answer, nothing changed.
    again = worker.post(trial, "complete", reports=_reports((2, 0.1), (3, 0.1)))
    assert again.status_code == 200 and again.json()["state"] == "completed"
    assert _curve(client, trial) == [(1, 0.5), (2, 0.6), (3, 0.7)]
    assert _detail(client, trial)["value"] == 0.7
    best = client.get(f"/api/v1/studies/{trial['study_id']}").json()["best"]
    assert best["trial_id"] == trial["trial_id"] and best["value"] == 0.7


def test_a_completion_with_reports_also_leases_the_next_trial(client: TestClient) -> None:
    _study(client, budget={"max_trials": 2, "parallel_trials": 1, "epochs": 1})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = worker.post(trial, "complete", reports=_reports((1, 0.4)), lease=1, held=[])
    assert reply.json()["state"] == "completed"
    [following] = reply.json()["assignments"]
    assert following["trial_id"] != trial["trial_id"] and following["number"] == 1


def test_a_stale_token_is_409_and_records_nothing(client: TestClient) -> None:
    _study(client)
    first, second = ApiWorker(client, "first"), ApiWorker(client, "second")
    [trial] = first.lease()
    assert first.post(trial, "release").json()["state"] == "queued"
    [again] = second.lease()
    assert again["trial_id"] == trial["trial_id"]
    reply = first.post(trial, "complete", reports=_reports((1, 0.9), (2, 0.9), (3, 0.9)))
    assert reply.status_code == 409 and "stale" in reply.json()["detail"]
    assert _curve(client, trial) == []
    assert _detail(client, trial)["state"] == "running"
    assert _detail(client, trial)["worker"] == "second"


def test_a_bad_report_is_422_naming_its_field_and_nothing_is_recorded(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = worker.post(trial, "complete", reports=[*_reports((1, 0.5)), {"epoch": 0}])
    assert reply.status_code == 422
    locations = [e["loc"] for e in reply.json()["detail"]]
    assert ["body", "reports", 1, "epoch"] in locations
    assert _curve(client, trial) == [] and _detail(client, trial)["state"] == "running"


def test_a_pruners_answer_to_the_last_report_wins(client: TestClient) -> None:
    _study(client, strategy=MEDIAN, budget={"max_trials": 5, "parallel_trials": 1, "epochs": 2})
    worker = ApiWorker(client)
    for _ in range(3):  # the median pruner's start-up trials, all good
        [trial] = worker.lease()
        assert worker.run(trial, [0.8, 0.9]).json()["state"] == "completed"
    [bad] = worker.lease()
    assert bad["report_interval"] == 0  # a pruner reads every report: none may be held
    assert worker.report(bad, 1, val_accuracy=0.85).json()["decision"] == "continue"
    test = {"test_accuracy": 0.5, "test_loss": 1.0}
    reply = worker.post(bad, "complete", reports=_reports((2, 0.1)), test_metrics=test)
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "pruned"
    detail = _detail(client, bad)
    assert detail["state"] == "pruned" and detail["reason"] == "pruned at epoch 2"
    assert detail["test_metrics"] is None  # a trial that did not complete has no test score
    assert _curve(client, bad) == [(1, 0.85), (2, 0.1)]
    again = worker.post(bad, "complete", reports=_reports((2, 0.1)))
    assert again.status_code == 200 and again.json()["state"] == "pruned"  # a repeat hears it


def test_a_stopped_studys_pause_wins_over_the_completion(client: TestClient) -> None:
    study = _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert trial["report_interval"] == 1.0  # no pruner: reports may travel together
    assert client.post(f"/api/v1/studies/{study['id']}/stop").json()["state"] == "stopped"
    reply = worker.post(trial, "complete", reports=_reports((1, 0.3), (2, 0.4), (3, 0.5)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "paused"
    # Paused at the last epoch sent, every epoch before it recorded.
    assert _curve(client, trial) == [(1, 0.3), (2, 0.4), (3, 0.5)]
    assert _detail(client, trial)["epochs"] == 3
    assert worker.post(trial, "complete", reports=_reports((3, 0.5))).json()["state"] == "paused"


def test_a_stopped_study_pauses_a_trial_at_its_last_epoch_of_a_batch(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 4, "parallel_trials": 2, "epochs": 5})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert client.post(f"/api/v1/studies/{study['id']}/stop").json()["state"] == "stopped"
    items = [
        {"trial_id": trial["trial_id"], "token": trial["token"], **r}
        for r in _reports((1, 0.1), (2, 0.2), (3, 0.3))
    ]
    reply = worker.http.post(
        f"/api/v1/workers/{worker.id}/reports",
        content=json.dumps({"reports": items}),
        headers={"content-type": "application/json"},
    )
    assert [r["decision"] for r in reply.json()["results"]] == ["continue", "continue", "pause"]
    assert _curve(client, trial) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert _detail(client, trial)["state"] == "paused"


def test_a_rung_end_reports_with_its_lease_interval(client: TestClient) -> None:
    strategy = {"kind": "successive_halving", "n_configs": 3, "min_epochs": 1, "seed": 0}
    _study(client, strategy=strategy, budget={"epochs": 3, "parallel_trials": 3})
    worker = ApiWorker(client)
    first, *_ = worker.lease(count=3)
    # Rungs pause at the lease's last epoch, which a worker never holds: no pruner reads the
    # reports before it, so they may travel together.
    assert first["report_interval"] == 1.0 and first["target_epochs"] == 1
    reply = worker.post(first, "complete", reports=_reports((1, 0.5)))
    assert reply.json()["state"] == "paused"  # a rung's end, not the trial's


def test_the_report_interval_is_the_servers_setting(settings: Settings) -> None:
    quick = dataclasses.replace(settings, report_interval_seconds=0.25)
    with TestClient(create_app(quick, reaper=False)) as client:
        _study(client)
        _study(client, name="pruned", strategy=MEDIAN)
        worker = ApiWorker(client)
        intervals = sorted(a["report_interval"] for a in worker.lease(count=2))
        assert intervals == [0.0, 0.25]
    assert Settings.from_env({"HPO_REPORT_INTERVAL_SECONDS": "0"}).report_interval_seconds == 0
