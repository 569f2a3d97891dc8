"""With checkpoints on a time cadence (`checkpoint_seconds`) a trial's last checkpoint may lie
several epochs behind its last report. A trial paused (a stopped study) or handed back at such an
epoch resumes from its checkpoint and reports the epochs after it again: the server takes the
second attempt's reports (the first's after the checkpoint are dropped when it is handed out
again), a repeated report still changes nothing, and the trial completes with the curve 1..N
once. A bad `checkpoint_seconds` is a 422 naming the field, as for every tunable."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ApiWorker, spec_doc


def _study(client: TestClient, **overrides: Any) -> dict[str, Any]:
    reply = client.post("/api/v1/studies", json=spec_doc(**overrides))
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    return created


def _checkpoint(client: TestClient, worker: ApiWorker, trial: dict[str, Any], epoch: int) -> None:
    reply = client.put(
        f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}/checkpoint",
        params={"epoch": epoch},
        content=f"state after {epoch}".encode(),
        headers={"X-Lease-Token": trial["token"]},
    )
    assert reply.status_code == 200, reply.text


def _report(worker: ApiWorker, trial: dict[str, Any], epoch: int, value: float) -> str:
    reply = worker.report(trial, epoch, val_accuracy=value)
    assert reply.status_code == 200, reply.text
    decision: str = reply.json()["decision"]
    return decision


def _batch(client: TestClient, worker: ApiWorker, trial: dict[str, Any], epoch: int) -> Any:
    item = {"trial_id": trial["trial_id"], "token": trial["token"], "epoch": epoch}
    body = {"reports": [{**item, "metrics": {"val_accuracy": 0.1 * epoch}}]}
    reply = client.post(f"/api/v1/workers/{worker.id}/reports", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["results"][0]


def _trial(client: TestClient, trial: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    return detail


def test_a_paused_trial_resumes_from_an_older_checkpoint_and_reports_again(
    client: TestClient,
) -> None:
    study = _study(client, budget={"max_trials": 1, "parallel_trials": 1, "epochs": 5})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    _report(worker, trial, 1, 0.11)
    _checkpoint(client, worker, trial, 2)  # the cadence chose epoch 2, not 1 nor 3
    _report(worker, trial, 2, 0.12)
    _report(worker, trial, 3, 0.13)
    assert client.post(f"/api/v1/studies/{study['id']}/stop").status_code == 200
    assert _report(worker, trial, 4, 0.14) == "pause"  # no checkpoint after epoch 2
    assert _report(worker, trial, 4, 0.14) == "pause"  # retried: the same answer
    paused = _trial(client, trial)
    assert (paused["state"], paused["epochs"], paused["checkpoint_epoch"]) == ("paused", 4, 2)

    assert client.post(f"/api/v1/studies/{study['id']}/resume").status_code == 200
    [again] = worker.lease()
    assert again["trial_id"] == trial["trial_id"] and again["start_epoch"] == 2
    assert again["checkpoint_id"] is not None
    resumed = _trial(client, again)
    assert [p["epoch"] for p in resumed["curve"]] == [1, 2] and resumed["epochs"] == 2
    # Epochs 3 and 4 again, with this attempt's metrics (one through a batch); each repeat
    # of a report of this attempt changes nothing.
    assert _report(worker, again, 3, 0.23) == "continue"
    assert _report(worker, again, 3, 0.99) == "continue"
    assert _batch(client, worker, again, 4) == {
        "trial_id": trial["trial_id"],
        "status": 200,
        "decision": "continue",
        "detail": None,
    }
    assert _batch(client, worker, again, 4)["decision"] == "continue"
    assert _report(worker, again, 5, 0.25) == "continue"
    assert worker.post(again, "complete").json()["state"] == "completed"
    done = _trial(client, trial)
    assert [(p["epoch"], p["metrics"]["val_accuracy"]) for p in done["curve"]] == [
        (1, 0.11),
        (2, 0.12),
        (3, 0.23),
        (4, pytest.approx(0.4)),
        (5, 0.25),
    ]
    assert done["value"] == 0.25 and done["epochs"] == 5 and done["attempt"] == 1


def test_a_released_trial_resumes_from_its_last_checkpoint_not_its_last_report(
    client: TestClient,
) -> None:
    _study(client, budget={"max_trials": 1, "parallel_trials": 1, "epochs": 4})
    leaving, next_worker = ApiWorker(client, "leaving"), ApiWorker(client, "next")
    [trial] = leaving.lease()
    _checkpoint(client, leaving, trial, 1)
    _report(leaving, trial, 1, 0.11)
    _report(leaving, trial, 2, 0.12)
    assert leaving.post(trial, "release").json()["state"] == "queued"
    [again] = next_worker.lease()
    assert again["trial_id"] == trial["trial_id"] and again["start_epoch"] == 1
    assert leaving.report(trial, 2, val_accuracy=0.5).status_code == 409  # not its trial now
    assert next_worker.run(again, [0.11, 0.22, 0.33, 0.44]).json()["state"] == "completed"
    done = _trial(client, trial)
    # Epoch 1 is the first attempt's (the repeat changed nothing), 2.. the second's.
    values = [p["metrics"]["val_accuracy"] for p in done["curve"]]
    assert values == [0.11, 0.22, 0.33, 0.44] and done["attempt"] == 1


@pytest.mark.parametrize(
    ("where", "loc", "words"),
    [
        ("workload", ["workload", "checkpoint_seconds"], "must be >= 0.0, got -1"),
        (
            "space",
            ["space", "checkpoint_seconds", "low"],
            "must be >= 0.0, got -5.0; it takes a number >= 0.0",
        ),
    ],
)
def test_a_negative_checkpoint_seconds_is_a_422_naming_the_field(
    client: TestClient, where: str, loc: list[str], words: str
) -> None:
    doc = spec_doc()
    if where == "workload":
        doc["workload"] = {**doc["workload"], "checkpoint_seconds": -1}
    else:
        doc["space"] = {
            **doc["space"],
            "checkpoint_seconds": {"type": "float", "low": -5.0, "high": 5},
        }
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 422, reply.text
    first = reply.json()["detail"][0]
    assert first["loc"] == ["body", *loc] and words in first["msg"], first
    assert client.get("/api/v1/studies").json() == []


def test_checkpoint_seconds_is_listed_with_its_default(client: TestClient) -> None:
    items = {t["name"]: t for t in client.get("/api/v1/tunables").json()["items"]}
    assert items["checkpoint_seconds"]["default"] == 10.0
    assert items["checkpoint_seconds"]["allows"] == "a number >= 0.0"
    ok = spec_doc(workload={"model": "mlp", "dataset": "synthetic", "checkpoint_seconds": 0})
    assert client.post("/api/v1/studies", json=ok).status_code == 201
