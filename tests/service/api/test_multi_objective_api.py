"""Multi-objective studies through the API: what a spec with `objectives` may hold (each refusal
names its field), and `best` as the Pareto set of the trials a worker completed."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, spec_doc

OBJECTIVES = [
    {"metric": "val_accuracy", "direction": "maximize"},
    {"metric": "train_seconds", "direction": "minimize"},
]

# Each trial's (val_accuracy, train_seconds) at its last epoch, in trial-number order.
RESULTS = [
    (0.80, 10.0),
    (0.90, 30.0),
    (0.85, 12.0),  # beaten by nothing: faster than 1, more accurate than 0
    (0.75, 20.0),  # beaten by 0 (better and faster) and by 2
    (0.90, 30.0),  # the same as 1: both stay on the front
    (0.95, 60.0),
]


def multi_doc(name: str = "mo", **overrides: Any) -> dict[str, Any]:
    doc = spec_doc(name, budget={"max_trials": len(RESULTS), "parallel_trials": 1, "epochs": 2})
    del doc["objective"]
    doc["objectives"] = OBJECTIVES
    doc.update(overrides)
    return doc


def recomputed_front(trials: list[dict[str, Any]]) -> list[int]:
    """The Pareto set by the definition, over the completed trials the API lists: the numbers
    of those no other beats on both objectives (at least as good on each, better on one)."""
    done = [t for t in trials if t["state"] == "completed"]

    def beats(a: list[float], b: list[float]) -> bool:
        no_worse = a[0] >= b[0] and a[1] <= b[1]
        return no_worse and (a[0] > b[0] or a[1] < b[1])

    return sorted(
        t["number"] for t in done if not any(beats(o["values"], t["values"]) for o in done)
    )


def test_best_is_the_pareto_set_of_the_completed_trials(
    client: TestClient, settings: Settings
) -> None:
    reply = client.post("/api/v1/studies", json=multi_doc())
    assert reply.status_code == 201, reply.text
    study = reply.json()
    assert study["spec"]["objectives"] == OBJECTIVES
    assert study["best"] == []
    worker = ApiWorker(client)
    for accuracy, seconds in RESULTS:
        [trial] = worker.lease()
        for epoch in (1, 2):
            # The first epoch's values are not the trial's: only the last report counts.
            metrics = {"val_accuracy": accuracy * epoch / 2, "train_seconds": seconds * epoch / 2}
            assert worker.report(trial, epoch, **metrics).status_code == 200
        assert worker.post(trial, "complete").status_code == 200

    study = client.get(f"/api/v1/studies/{study['id']}").json()
    assert study["state"] == "completed"
    trials = client.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
    assert [t["values"] for t in trials] == [list(r) for r in RESULTS]
    assert all(t["value"] is None for t in trials)
    front = recomputed_front(trials)
    assert front == [0, 1, 2, 4, 5]
    assert [b["number"] for b in study["best"]] == front
    by_number = {t["number"]: t for t in trials}
    for best in study["best"]:
        assert best["values"] == by_number[best["number"]]["values"]
        assert best["params"] == by_number[best["number"]]["params"]
        assert best["value"] is None
    # Optuna's study has both directions and was told each completed trial's values.
    told = optuna.load_study(study_name="mo", storage=settings.database_url)
    assert [d.name for d in told.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.values for t in told.trials] == [list(r) for r in RESULTS]
    assert sorted(t.number for t in told.best_trials) == front


def test_a_trial_missing_an_objective_fails_naming_it(client: TestClient) -> None:
    doc = multi_doc(budget={"max_trials": 1, "parallel_trials": 1, "epochs": 1})
    study = client.post("/api/v1/studies", json=doc).json()
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.report(trial, 1, val_accuracy=0.9).status_code == 200
    assert worker.post(trial, "complete").status_code == 200
    [row] = client.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
    assert row["state"] == "failed"
    assert row["reason"] == "objective 'train_seconds' was not a finite number at the last report"
    assert client.get(f"/api/v1/studies/{study['id']}").json()["best"] == []


@pytest.mark.parametrize("kind", ["nsga2", "tpe", "gp", "grid"])
def test_multi_objective_samplers_run(client: TestClient, kind: str) -> None:
    space = {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "grid": 3}}
    doc = multi_doc(f"mo-{kind}", strategy={"kind": kind, "seed": 3}, space=space)
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 201, reply.text
    worker = ApiWorker(client)
    for number in range(3):
        [trial] = worker.lease()
        lr = trial["params"]["lr"]
        for epoch in (1, 2):
            metrics = {"val_accuracy": lr * 5, "train_seconds": 1.0 / lr}
            assert worker.report(trial, epoch, **metrics).status_code == 200
        assert worker.post(trial, "complete").status_code == 200, number
    trials = client.get(f"/api/v1/studies/{reply.json()['id']}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["completed"] * 3


_BOTH = {"metric": "val_accuracy", "direction": "maximize"}

REFUSED = [
    pytest.param(
        {"objectives": [OBJECTIVES[0], OBJECTIVES[0]]},
        ["body", "objectives", 1, "metric"],
        "metric 'val_accuracy' is already an objective; give each metric once",
        id="duplicate",
    ),
    pytest.param(
        {
            "objectives": [
                *OBJECTIVES,
                {"metric": "n_params", "direction": "minimize"},
                {"metric": "val_loss"},
            ]
        },
        ["body", "objectives"],
        "4 objectives; at most 3 are allowed",
        id="too-many",
    ),
    pytest.param(
        {"objectives": [OBJECTIVES[0]]},
        ["body", "objectives"],
        "at least 2 items",
        id="one",
    ),
    pytest.param(
        {"objectives": [OBJECTIVES[0], {"metric": "train_seconds", "direction": "lower"}]},
        ["body", "objectives", 1, "direction"],
        "Input should be 'maximize' or 'minimize'",
        id="unknown-direction",
    ),
    pytest.param(
        {"objectives": [OBJECTIVES[0], {"metric": "train_seconds"}]},
        ["body", "objectives", 1, "direction"],
        "cannot tell whether to maximize or minimize metric 'train_seconds'",
        id="direction-not-inferred",
    ),
    pytest.param(
        {"objective": {"metric": "val_loss"}},
        ["body", "objective"],
        "give either `objective` or `objectives`, not both",
        id="both",
    ),
    pytest.param(
        {"strategy": {"kind": "successive_halving", "min_epochs": 1}},
        ["body", "strategy", "kind"],
        "successive_halving promotes the best trials of each rung by one value",
        id="successive-halving",
    ),
    pytest.param(
        {"strategy": {"kind": "hyperband"}},
        ["body", "strategy", "kind"],
        "hyperband promotes the best trials of each rung by one value",
        id="hyperband",
    ),
    pytest.param(
        {"strategy": {"kind": "random", "early_stopping": "median"}},
        ["body", "strategy", "early_stopping"],
        "early_stopping median stops a trial whose one value is worse than others'",
        id="median",
    ),
    pytest.param(
        {"strategy": {"kind": "tpe", "early_stopping": "asha"}},
        ["body", "strategy", "early_stopping"],
        "early_stopping asha stops a trial",
        id="asha",
    ),
]


@pytest.mark.parametrize(("change", "loc", "message"), REFUSED)
def test_refused_specs_name_the_field(
    client: TestClient, change: dict[str, Any], loc: list[Any], message: str
) -> None:
    reply = client.post("/api/v1/studies", json=multi_doc(**change))
    assert reply.status_code == 422, reply.text
    errors = reply.json()["detail"]
    assert [e["loc"] for e in errors] == [loc], errors
    assert message in errors[0]["msg"]


def test_spec_read_back_can_be_submitted_again(client: TestClient) -> None:
    """The stored spec holds `objective` (the first objective) beside `objectives`; sent again
    as it is, it is the same study, not a refusal for giving both."""
    created = client.post("/api/v1/studies", json=multi_doc()).json()
    assert created["spec"]["objective"] == _BOTH
    again = {**created["spec"], "name": "again"}
    reply = client.post("/api/v1/studies", json=again)
    assert reply.status_code == 201, reply.text
    assert reply.json()["spec"]["objectives"] == OBJECTIVES


def test_a_trial_resumed_from_its_checkpoint_has_that_epochs_values(settings: Settings) -> None:
    """A lease that runs out after epoch 3, with a checkpoint of epoch 2: the trial is handed
    out again from epoch 2, and until it reports again its values are epoch 2's."""
    app = create_app(replace(settings, lease_seconds=2.0), reaper=False)
    with TestClient(app) as client:
        doc = multi_doc("resumed", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 4})
        client.post("/api/v1/studies", json=doc)
        gone = ApiWorker(client, "gone")
        [trial] = gone.lease()
        for epoch in (1, 2, 3):
            if epoch < 3:
                reply = client.put(
                    f"/api/v1/workers/{gone.id}/trials/{trial['trial_id']}/checkpoint",
                    params={"epoch": epoch},
                    content=b"state",
                    headers={"X-Lease-Token": trial["token"]},
                )
                assert reply.status_code == 200, reply.text
            metrics = {"val_accuracy": 0.25 * epoch, "train_seconds": 10.0 * epoch}
            assert gone.report(trial, epoch, **metrics).status_code == 200
        detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
        assert (detail["value"], detail["values"]) == (None, [0.75, 30.0])
        time.sleep(2.5)  # the worker is heard of no more: its lease runs out
        heir = ApiWorker(client, "heir")
        [again] = heir.lease()
        assert again["trial_id"] == trial["trial_id"] and again["start_epoch"] == 2
        detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
        assert (detail["epochs"], detail["value"], detail["values"]) == (2, None, [0.5, 20.0])
        for epoch in (3, 4):
            metrics = {"val_accuracy": 0.2 * epoch, "train_seconds": 11.0 * epoch}
            assert heir.report(again, epoch, **metrics).status_code == 200
        assert heir.post(again, "complete").json()["state"] == "completed"
        study = client.get("/api/v1/studies/1").json()
        assert [b["values"] for b in study["best"]] == [[0.8, 44.0]]


def test_exports_carry_each_trials_objective_values(client: TestClient) -> None:
    study = client.post("/api/v1/studies", json=multi_doc("mo-export")).json()
    worker = ApiWorker(client)
    for accuracy, seconds in RESULTS[:3]:
        [trial] = worker.lease()
        metrics = {"val_accuracy": accuracy, "train_seconds": seconds}
        assert worker.report(trial, 1, **metrics).status_code == 200
        assert worker.report(trial, 2, **metrics).status_code == 200
        assert worker.post(trial, "complete").status_code == 200
    trials = client.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
    by_number = {t["number"]: t["values"] for t in trials}

    reply = client.get(f"/api/v1/studies/{study['id']}/trials.csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    header = list(rows[0])
    assert header.index("values_val_accuracy") < header.index("values_train_seconds")
    for row in rows:
        values = [float(row["values_val_accuracy"]), float(row["values_train_seconds"])]
        assert values == by_number[int(row["number"])]

    reply = client.get(f"/api/v1/studies/{study['id']}/trials.jsonl")
    items = [json.loads(line) for line in reply.text.splitlines()]
    assert [list(i["values"].values()) for i in items] == [by_number[i["number"]] for i in items]
    assert all(list(i["values"]) == ["val_accuracy", "train_seconds"] for i in items)


def test_a_single_objective_export_has_no_values_columns(client: TestClient) -> None:
    study = client.post("/api/v1/studies", json=spec_doc("so-export")).json()
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.run(trial, [0.5, 0.75]).status_code == 200
    header = client.get(f"/api/v1/studies/{study['id']}/trials.csv").text.splitlines()[0]
    assert "values_" not in header
    [item] = client.get(f"/api/v1/studies/{study['id']}/trials.jsonl").text.splitlines()
    assert "values" not in json.loads(item)
