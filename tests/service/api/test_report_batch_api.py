"""Batched reports (POST /api/v1/workers/{id}/reports): every guarantee of the single report
holds per item (idempotent repeats, 409 for a stale token without touching the other items,
each trial's own pause / prune / stop), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from hpo.protocol import Decision, ReportBatchResponse
from service.storage.unit import reading
from tests.conftest import ApiWorker, spec_doc


def _study(client: TestClient, **overrides: Any) -> dict[str, Any]:
    reply = client.post("/api/v1/studies", json=spec_doc(**overrides))
    assert reply.status_code == 201, reply.text
    return reply.json()


def _item(trial: dict[str, Any], epoch: int, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "trial_id": trial["trial_id"],
        "token": trial["token"],
        "epoch": epoch,
        "metrics": {"val_accuracy": value},
        **extra,
    }


def _batch(worker: ApiWorker, *items: dict[str, Any]) -> Any:
    return worker.http.post(
        f"/api/v1/workers/{worker.id}/reports",
        content=json.dumps({"reports": list(items)}),
        headers={"content-type": "application/json"},
    )


def _results(worker: ApiWorker, *items: dict[str, Any]) -> list[dict[str, Any]]:
    reply = _batch(worker, *items)
    assert reply.status_code == 200, reply.text
    results: list[dict[str, Any]] = reply.json()["results"]
    return results


def _curve(client: TestClient, trial: dict[str, Any]) -> list[dict[str, Any]]:
    curve: list[dict[str, Any]] = client.get(f"/api/v1/trials/{trial['trial_id']}").json()["curve"]
    return curve


def test_a_batch_stores_every_trials_epoch_and_answers_in_order(client: TestClient) -> None:
    _study(client, budget={"max_trials": 4, "parallel_trials": 3, "epochs": 3})
    worker = ApiWorker(client)
    trials = worker.lease(count=3)
    results = _results(worker, *(_item(t, 1, 0.1 * n) for n, t in enumerate(trials, 1)))
    assert results == [
        {"trial_id": t["trial_id"], "status": 200, "decision": "continue", "detail": None}
        for t in trials
    ]
    for n, trial in enumerate(trials, 1):
        detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
        assert detail["curve"] == [{"epoch": 1, "metrics": {"val_accuracy": 0.1 * n}}]
        assert detail["epochs"] == 1 and detail["value"] == 0.1 * n
    # Two epochs of one trial in one batch, then the trial completes as usual.
    first = trials[0]
    assert [
        r["decision"] for r in _results(worker, _item(first, 2, 0.5), _item(first, 3, 0.6))
    ] == [
        "continue",
        "continue",
    ]
    assert worker.post(first, "complete").json()["state"] == "completed"
    assert [p["epoch"] for p in _curve(client, first)] == [1, 2, 3]


def test_a_repeated_batch_changes_nothing(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    a, b = worker.lease(count=2)
    assert _results(worker, _item(a, 1, 0.4), _item(b, 1, 0.3))[0]["decision"] == "continue"
    again = _results(worker, _item(a, 1, 0.99), _item(b, 1, 0.98))
    assert [r["decision"] for r in again] == ["continue", "continue"]
    assert _curve(client, a) == [{"epoch": 1, "metrics": {"val_accuracy": 0.4}}]
    assert _curve(client, b) == [{"epoch": 1, "metrics": {"val_accuracy": 0.3}}]
    assert client.get(f"/api/v1/trials/{a['trial_id']}").json()["value"] == 0.4


def test_a_stale_item_is_409_and_the_others_are_stored(client: TestClient) -> None:
    _study(client, budget={"max_trials": 4, "parallel_trials": 3, "epochs": 3})
    first, second = ApiWorker(client, "first"), ApiWorker(client, "second")
    a, b = first.lease(count=2)
    assert first.post(b, "release").json()["state"] == "queued"
    [b_again] = second.lease()  # b is second's now; first's token for it is stale
    assert b_again["trial_id"] == b["trial_id"]
    results = _results(
        first,
        _item(a, 1, 0.5),
        _item(b, 1, 0.9),
        _item({**a, "token": "forged"}, 2, 0.9),
        {**_item(a, 1, 0.5), "trial_id": 2_000_000},
    )
    assert [(r["trial_id"], r["status"], r["decision"]) for r in results] == [
        (a["trial_id"], 200, "continue"),
        (b["trial_id"], 409, None),
        (a["trial_id"], 409, None),
        (2_000_000, 404, None),
    ]
    assert "stale" in results[1]["detail"] and "not found" in results[3]["detail"]
    assert _curve(client, a) == [{"epoch": 1, "metrics": {"val_accuracy": 0.5}}]
    assert _curve(client, b) == []  # the stale item wrote nothing
    detail = client.get(f"/api/v1/trials/{b['trial_id']}").json()
    assert detail["state"] == "running" and detail["worker"] == "second"
    assert _results(second, _item(b_again, 1, 0.2))[0]["decision"] == "continue"


def test_decisions_are_per_trial_pause_and_stop(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 4, "parallel_trials": 2, "epochs": 3})
    other = _study(client, name="s2", budget={"max_trials": 4, "parallel_trials": 1, "epochs": 3})
    worker = ApiWorker(client)
    trials = worker.lease(count=3)
    by_study = {t["study_id"]: [] for t in trials}
    for trial in trials:
        by_study[trial["study_id"]].append(trial)
    [kept] = by_study[other["id"]]
    stopped_one, stopped_two = by_study[study["id"]]
    assert worker.post(stopped_two, "fail", reason="bad data").json()["state"] == "failed"
    assert client.post(f"/api/v1/studies/{study['id']}/stop").json()["state"] == "stopped"
    results = _results(
        worker, _item(stopped_one, 1, 0.5), _item(kept, 1, 0.5), _item(stopped_two, 1, 0.5)
    )
    # The stopped study's trial pauses, the other study's goes on, the failed one is dropped.
    assert [r["decision"] for r in results] == ["pause", "continue", "stop"]
    assert client.get(f"/api/v1/trials/{stopped_one['trial_id']}").json()["state"] == "paused"
    repeat = _results(worker, _item(stopped_one, 1, 0.5))
    assert repeat[0]["decision"] == "pause"  # a retried batch hears the same


def test_the_pruner_prunes_its_trial_and_spares_the_rest_of_the_batch(
    client: TestClient,
) -> None:
    _study(
        client,
        strategy={"kind": "random", "seed": 0, "early_stopping": "median"},
        budget={"max_trials": 6, "parallel_trials": 6, "epochs": 4},
    )
    worker = ApiWorker(client)
    for _ in range(3):  # the median pruner's start-up trials, all good
        [trial] = worker.lease()
        assert worker.run(trial, [0.8, 0.85, 0.9, 0.95]).json()["state"] == "completed"
    good, bad = worker.lease(count=2)
    results = _results(worker, _item(good, 1, 0.8), _item(bad, 1, 0.1))
    assert [r["decision"] for r in results] == ["continue", "prune"]
    detail = client.get(f"/api/v1/trials/{bad['trial_id']}").json()
    assert detail["state"] == "pruned" and detail["reason"] == "pruned at epoch 1"
    assert client.get(f"/api/v1/trials/{good['trial_id']}").json()["state"] == "running"
    assert _results(worker, _item(bad, 1, 0.1))[0]["decision"] == "prune"  # retried
    assert [p["epoch"] for p in _curve(client, good)] == [1]


def test_a_bad_item_is_422_naming_its_field_and_nothing_is_stored(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = _batch(worker, _item(trial, 1, 0.5), _item(trial, 0, 0.5))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "reports", 1, "epoch"]
    assert _curve(client, trial) == []
    empty = _batch(worker)
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "reports"]


def test_optunas_values_of_a_batch_are_written_in_one_optuna_commit(client: TestClient) -> None:
    # A pruner reads each value as it is reported (without one they wait for the trial's end)
    strategy = {"kind": "random", "seed": 0, "early_stopping": "median"}
    _study(client, strategy=strategy, budget={"max_trials": 4, "parallel_trials": 4, "epochs": 3})
    worker = ApiWorker(client)
    trials = worker.lease(count=4)
    storage = client.app.state.services.studies.storage  # type: ignore[attr-defined]
    writes = [0, 0]  # Optuna's commits that wrote intermediate values; one writing, not yet

    def executed(_conn: object, _cursor: object, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO trial_intermediate_values"):
            writes[1] = 1

    def committed(_connection: object) -> None:
        writes[0] += writes[1]
        writes[1] = 0

    event.listen(storage.engine, "before_cursor_execute", executed)
    event.listen(storage.engine, "commit", committed)
    try:
        results = _results(worker, *(_item(t, 1, n / 10) for n, t in enumerate(trials, 1)))
    finally:
        event.remove(storage.engine, "commit", committed)
        event.remove(storage.engine, "before_cursor_execute", executed)
    assert [r["decision"] for r in results] == ["continue"] * 4
    assert writes[0] == 1  # Optuna's own set_trial_intermediate_value commits once a value
    for n, trial in enumerate(trials, 1):
        detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
        optuna_trial = storage.get_trial(_optuna_id(client, detail["id"]))
        assert optuna_trial.intermediate_values == {1: n / 10}


def _optuna_id(client: TestClient, trial_id: int) -> int:
    services = client.app.state.services  # type: ignore[attr-defined]
    with reading(services.db) as stores:
        row = stores.trials.get(trial_id)
        assert row is not None and row.optuna_trial_id is not None
        return row.optuna_trial_id


def test_an_epoch_after_a_rungs_end_in_the_same_batch_is_not_stored(client: TestClient) -> None:
    strategy = {"kind": "successive_halving", "n_configs": 3, "min_epochs": 1, "seed": 0}
    _study(client, strategy=strategy, budget={"epochs": 3, "parallel_trials": 3})
    worker = ApiWorker(client)
    first, second, _third = worker.lease(count=3)
    results = _results(worker, _item(first, 1, 0.5), _item(first, 2, 0.6), _item(second, 1, 0.4))
    # Rung 0 ends at epoch 1: the trial pauses there, and its epoch 2 (trained past the rung's
    # end) is answered `pause` too and not stored; the other trial's rung end is its own.
    assert [r["decision"] for r in results] == ["pause", "pause", "pause"]
    assert _curve(client, first) == [{"epoch": 1, "metrics": {"val_accuracy": 0.5}}]
    assert client.get(f"/api/v1/trials/{first['trial_id']}").json()["epochs"] == 1


def test_a_batch_of_several_studies_with_stale_and_repeated_items_is_answered_item_by_item(
    client: TestClient,
) -> None:
    """Trials of three studies in one batch (two share a study row lock on PostgreSQL, one a
    successive-halving study's, locked exclusively), mixed with a repeat and a stale item:
    each item is answered as it would be alone, and only the new, held ones are stored."""
    budget = {"max_trials": 4, "parallel_trials": 2, "epochs": 3}
    _study(client, name="r1", budget=budget)
    _study(client, name="r2", budget=budget)
    _study(
        client,
        name="sh",
        strategy={"kind": "successive_halving", "seed": 0, "min_epochs": 1, "n_configs": 2},
        budget={"max_trials": 3, "parallel_trials": 2, "epochs": 2},
    )
    worker, other = ApiWorker(client, "w"), ApiWorker(client, "other")
    trials = worker.lease(count=6)
    assert len({t["study_id"] for t in trials}) == 3
    first, second = trials[0], trials[1]
    assert _results(worker, _item(first, 1, 0.4))[0]["decision"] == "continue"
    assert worker.post(second, "release").json()["state"] == "queued"
    [taken] = other.lease()  # the released trial is the other worker's now
    assert taken["trial_id"] == second["trial_id"]
    items = [
        _item(first, 1, 0.99),  # a repeat: keeps the first report
        _item(second, 1, 0.9),  # stale: the other worker holds it
        *(_item(t, 1, 0.5) for t in trials[2:]),
        _item(first, 2, 0.6),
    ]
    results = _results(worker, *items)
    rungs = {t["trial_id"] for t in trials if t["study_id"] == trials[-1]["study_id"]}
    expected = [(first["trial_id"], 200, "continue"), (second["trial_id"], 409, None)]
    expected += [
        (t["trial_id"], 200, "pause" if t["trial_id"] in rungs else "continue") for t in trials[2:]
    ]
    expected += [(first["trial_id"], 200, "continue")]
    assert [(r["trial_id"], r["status"], r["decision"]) for r in results] == expected
    assert _curve(client, first) == [
        {"epoch": 1, "metrics": {"val_accuracy": 0.4}},
        {"epoch": 2, "metrics": {"val_accuracy": 0.6}},
    ]
    assert _curve(client, second) == []
    for trial in trials[2:]:
        assert _curve(client, trial) == [{"epoch": 1, "metrics": {"val_accuracy": 0.5}}]
    again = _results(worker, *items)  # the whole batch again: the same answers
    assert [(r["trial_id"], r["status"], r["decision"]) for r in again] == expected


def test_the_body_is_checked_as_strictly_as_before_and_the_answer_is_the_protocols(
    client: TestClient,
) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    # 2.0 is an integer to JSON Schema (and to every other request body of the API).
    reply = _batch(worker, _item(trial, 2.0, 0.5))  # type: ignore[arg-type]
    assert reply.status_code == 200, reply.text
    assert ReportBatchResponse.model_validate_json(reply.content).results[0].decision == (
        Decision.CONTINUE
    )
    assert [p["epoch"] for p in _curve(client, trial)] == [2]
    for bad, loc in (
        ({**_item(trial, 3, 0.5), "token": "a\u0000b"}, ["body", "reports"]),
        (_item(trial, 3, 0.5, extra=1), ["body", "reports", 0, "extra"]),
        ({**_item(trial, 3, 0.5), "epoch": True}, ["body", "reports", 0, "epoch"]),
        ({**_item(trial, 3, 0.5), "metrics": {"val_accuracy": "0.5"}}, None),
    ):
        reply = _batch(worker, bad)
        assert reply.status_code == 422, reply.text
        if loc is not None:
            assert reply.json()["detail"][0]["loc"] == loc
    assert [p["epoch"] for p in _curve(client, trial)] == [2]
    broken = worker.http.post(
        f"/api/v1/workers/{worker.id}/reports",
        content=b'{"reports": [',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 422 and broken.json()["detail"][0]["loc"][0] == "body"
