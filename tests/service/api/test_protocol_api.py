"""The worker protocol over HTTP: lease, report, complete, fail, release, and the study's life."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ApiWorker, spec_doc


def _study(client: TestClient, **overrides) -> dict:
    reply = client.post("/api/v1/studies", json=spec_doc(**overrides))
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_study_completes_with_max_trials_and_best_is_the_maximum(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 4, "parallel_trials": 4, "epochs": 3})
    worker = ApiWorker(client)
    finals = [0.5, 0.9, 0.7, 0.6]
    for final in finals:
        [trial] = worker.lease()
        assert trial["epochs"] == 3 and trial["start_epoch"] == 0
        assert trial["workload"]["model"] == "mlp" and trial["params"]
        assert worker.run(trial, [final / 3, final / 2, final]).json()["state"] == "completed"
    assert worker.lease() == []
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed"
    assert view["counts"]["completed"] == 4
    assert view["best"]["value"] == pytest.approx(0.9)
    assert view["best"]["number"] == 1
    page = client.get(f"/api/v1/studies/{study['id']}/trials").json()
    assert [t["value"] for t in page["items"]] == pytest.approx(finals)
    detail = client.get(f"/api/v1/trials/{page['items'][0]['id']}").json()
    assert [p["epoch"] for p in detail["curve"]] == [1, 2, 3]
    assert detail["curve"][2]["metrics"] == {"val_accuracy": 0.5, "val_loss": 0.5}
    assert detail["worker"] == "w"


def test_trials_are_paginated_with_a_cursor(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 5, "parallel_trials": 5, "epochs": 1})
    worker = ApiWorker(client)
    assert len(worker.lease(count=5)) == 5
    first = client.get(f"/api/v1/studies/{study['id']}/trials?limit=2").json()
    assert [t["number"] for t in first["items"]] == [0, 1]
    second = client.get(f"/api/v1/studies/{study['id']}/trials?limit=2&after={first['next']}")
    assert [t["number"] for t in second.json()["items"]] == [2, 3]
    last = client.get(f"/api/v1/studies/{study['id']}/trials?limit=2&after=3").json()
    assert [t["number"] for t in last["items"]] == [4] and last["next"] is None


def test_parallel_trials_caps_running_trials(client: TestClient) -> None:
    _study(client, budget={"max_trials": 10, "parallel_trials": 2, "epochs": 1})
    worker = ApiWorker(client)
    assert len(worker.lease(count=5)) == 2
    assert worker.lease() == []


def test_a_lease_ahead_leaves_a_studys_last_parallel_slot_to_an_idle_worker(
    client: TestClient,
) -> None:
    """A worker still training that leases its next trials ahead never takes a study's last
    parallel slot: with as many workers as parallel_trials, the first to lease ahead would
    otherwise hold every slot in turn while the others wait."""
    _study(client, budget={"max_trials": 10, "parallel_trials": 3, "epochs": 1})
    busy, idle = ApiWorker(client, "busy"), ApiWorker(client, "idle")
    [training] = busy.lease()

    def lease_ahead(*held: dict) -> list[dict]:
        body = {"count": 2, "held": [t["trial_id"] for t in held], "ahead": True}
        reply = client.post(f"/api/v1/workers/{busy.id}/lease", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()["assignments"]

    [next_one] = lease_ahead(training)  # two of three slots taken: the third stays free
    assert lease_ahead(training, next_one) == []
    assert len(idle.lease(count=2)) == 1  # the idle worker takes it
    reply = client.post(f"/api/v1/workers/{busy.id}/lease", json={"count": 1, "ahead": "yes"})
    assert reply.status_code == 422 and "ahead" in reply.text


def test_reports_are_idempotent_per_epoch(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.report(trial, 1, val_accuracy=0.4).json() == {"decision": "continue"}
    assert worker.report(trial, 1, val_accuracy=0.99).json() == {"decision": "continue"}
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["curve"] == [{"epoch": 1, "metrics": {"val_accuracy": 0.4}}]
    assert detail["value"] == 0.4


def test_stale_token_gets_409_and_changes_nothing(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    forged = {**trial, "token": "not-the-token"}
    for action, body in (
        ("report", {"epoch": 1, "metrics": {"val_accuracy": 1.0}}),
        ("complete", {}),
        ("fail", {"reason": "x"}),
        ("release", {}),
    ):
        reply = worker.post(forged, action, **body)
        assert reply.status_code == 409, (action, reply.text)
        assert "stale" in reply.json()["detail"]
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["state"] == "running" and detail["curve"] == []


def test_complete_can_lease_the_next_trial_in_the_same_request(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 3, "parallel_trials": 1, "epochs": 1})
    worker = ApiWorker(client)
    [first] = worker.lease()
    assert worker.report(first, 1, val_accuracy=0.5).status_code == 200
    reply = worker.post(first, "complete", lease=1).json()
    # The completion frees the study's one parallel slot before the lease takes it.
    assert reply["state"] == "completed" and reply["id"] == first["trial_id"]
    [second] = reply["assignments"]
    assert second["number"] == 1 and second["token"] and second["params"]
    detail = client.get(f"/api/v1/trials/{second['trial_id']}").json()
    assert detail["state"] == "running" and detail["worker"] == "w"
    assert worker.report(second, 1, val_accuracy=0.6).status_code == 200
    assert worker.post(second, "complete").json()["assignments"] == []  # lease 0: none
    [third] = worker.lease()
    assert worker.report(third, 1, val_accuracy=0.7).status_code == 200
    assert worker.post(third, "complete", lease=1).json()["assignments"] == []  # no work left
    assert client.get(f"/api/v1/studies/{study['id']}").json()["state"] == "completed"


def test_a_refused_completion_leases_nothing(client: TestClient) -> None:
    _study(client, budget={"max_trials": 3, "parallel_trials": 3, "epochs": 1})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    forged = {**trial, "token": "not-the-token"}
    assert worker.post(forged, "complete", lease=1).status_code == 409
    bad = worker.post(trial, "complete", lease=65)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "lease"]
    # One of three trials is running; had the refused completions leased, fewer would be left.
    assert len(worker.lease(count=5)) == 2


def test_all_metrics_are_stored_and_nan_never_breaks_a_response(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 2, "parallel_trials": 2, "epochs": 2})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    metrics = {"val_accuracy": math.nan, "train_loss": math.inf, "lr": 0.01, "custom": -1e308}
    assert worker.report(trial, 1, **metrics).status_code == 200
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["curve"][0]["metrics"] == {
        "val_accuracy": None,
        "train_loss": None,
        "lr": 0.01,
        "custom": -1e308,
    }
    reply = worker.post(trial, "complete")
    assert reply.json()["state"] == "failed"
    assert "val_accuracy" in reply.json()["reason"]
    assert client.get(f"/api/v1/studies/{study['id']}").status_code == 200
    assert client.get(f"/api/v1/studies/{study['id']}/trials").status_code == 200


def test_fail_records_the_reason_and_study_fails_when_every_trial_failed(
    client: TestClient,
) -> None:
    study = _study(client, budget={"max_trials": 2, "parallel_trials": 2, "epochs": 2})
    worker = ApiWorker(client)
    for trial in worker.lease(count=2):
        reply = worker.post(trial, "fail", reason="training loss became NaN at epoch 1")
        assert reply.json()["state"] == "failed"
        assert reply.json()["reason"] == "training loss became NaN at epoch 1"
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "failed" and view["reason"] == "every trial failed"
    assert view["best"] is None


def test_release_queues_the_trial_for_another_worker(client: TestClient) -> None:
    _study(client, budget={"max_trials": 1, "parallel_trials": 1, "epochs": 2})
    first, second = ApiWorker(client, "first"), ApiWorker(client, "second")
    [trial] = first.lease()
    first.report(trial, 1, val_accuracy=0.3)
    assert first.post(trial, "release").json()["state"] == "queued"
    [again] = second.lease()
    assert again["trial_id"] == trial["trial_id"] and again["params"] == trial["params"]
    assert again["attempt"] == 1 and again["start_epoch"] == 0
    assert client.get(f"/api/v1/trials/{trial['trial_id']}").json()["curve"] == []
    assert first.report(trial, 2, val_accuracy=0.5).status_code == 409
    assert second.run(again, [0.4, 0.8]).json()["state"] == "completed"


def test_stop_pauses_running_trials_and_resume_continues(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 3, "parallel_trials": 1, "epochs": 2})
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert client.post(f"/api/v1/studies/{study['id']}/stop").json()["state"] == "stopped"
    assert worker.report(trial, 1, val_accuracy=0.5).json() == {"decision": "pause"}
    assert worker.report(trial, 1, val_accuracy=0.5).json() == {"decision": "pause"}  # retried
    assert worker.lease() == []
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["counts"]["paused"] == 1
    assert client.post(f"/api/v1/studies/{study['id']}/resume").json()["state"] == "running"
    [again] = worker.lease()
    assert again["trial_id"] == trial["trial_id"]
    assert worker.run(again, [0.5, 0.6]).json()["state"] == "completed"


def test_stopping_a_finished_study_is_409(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 1, "parallel_trials": 1, "epochs": 1})
    worker = ApiWorker(client)
    worker.run(worker.lease()[0], [0.5])
    reply = client.post(f"/api/v1/studies/{study['id']}/stop")
    assert reply.status_code == 409 and "completed" in reply.json()["detail"]


def test_raising_max_trials_continues_a_completed_study(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 1, "parallel_trials": 1, "epochs": 1})
    worker = ApiWorker(client)
    worker.run(worker.lease()[0], [0.5])
    url = f"/api/v1/studies/{study['id']}"
    assert client.get(url).json()["state"] == "completed"
    reply = client.patch(url, json={"budget": {"max_trials": 3}})
    assert reply.status_code == 200 and reply.json()["state"] == "running"
    assert reply.json()["spec"]["budget"]["max_trials"] == 3
    for _ in range(2):
        [trial] = worker.lease()
        worker.run(trial, [0.6])
    assert client.get(url).json()["state"] == "completed"
    assert client.get(url).json()["counts"]["completed"] == 3


def test_patch_refuses_a_budget_below_what_exists(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 4, "parallel_trials": 4, "epochs": 1})
    ApiWorker(client).lease(count=3)
    reply = client.patch(f"/api/v1/studies/{study['id']}", json={"budget": {"max_trials": 2}})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "budget", "max_trials"]
    reply = client.patch(f"/api/v1/studies/{study['id']}", json={"budget": {"max_trials": 0}})
    assert reply.status_code == 422


def test_delete_removes_study_and_its_trials(client: TestClient) -> None:
    study = _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert client.delete(f"/api/v1/studies/{study['id']}").status_code == 204
    assert client.get(f"/api/v1/studies/{study['id']}").status_code == 404
    assert client.get(f"/api/v1/trials/{trial['trial_id']}").status_code == 404
    assert worker.report(trial, 1, val_accuracy=0.5).status_code == 404
    # the name is free again, and the new study starts from scratch
    assert client.post("/api/v1/studies", json=spec_doc()).status_code == 201


def test_studies_share_workers_fairly(client: TestClient) -> None:
    a = _study(client, name="a", budget={"max_trials": 10, "parallel_trials": 10, "epochs": 1})
    b = _study(client, name="b", budget={"max_trials": 10, "parallel_trials": 10, "epochs": 1})
    worker = ApiWorker(client)
    leased = worker.lease(count=6)
    per_study = {a["id"]: 0, b["id"]: 0}
    for trial in leased:
        per_study[trial["study_id"]] += 1
    assert per_study == {a["id"]: 3, b["id"]: 3}


def test_workers_list_shows_current_trial(client: TestClient) -> None:
    _study(client)
    worker = ApiWorker(client, "gpu-box/cuda:0")
    [trial] = worker.lease()
    worker.report(trial, 1, val_accuracy=0.5)
    [listed] = client.get("/api/v1/workers").json()
    assert listed["name"] == "gpu-box/cuda:0" and listed["stale"] is False
    assert listed["trials"] == [
        {"trial_id": trial["trial_id"], "study_id": trial["study_id"], "number": 0, "epoch": 1}
    ]


def test_workers_list_shows_how_many_trials_a_worker_trains_at_once(client: TestClient) -> None:
    body = {"name": "fused", "capabilities": {"fuse": 8}}
    assert client.post("/api/v1/workers/register", json=body).status_code == 201
    ApiWorker(client, "plain")
    listed = {w["name"]: w["fuse"] for w in client.get("/api/v1/workers").json()}
    assert listed == {"fused": 8, "plain": 1}
    body = {"name": "bad", "capabilities": {"fuse": 0}}
    reply = client.post("/api/v1/workers/register", json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "capabilities", "fuse"]


def test_protocol_with_unregistered_worker_is_404(client: TestClient) -> None:
    reply = client.post("/api/v1/workers/42/lease", json={"count": 1})
    assert reply.status_code == 404 and "register" in reply.json()["detail"]


def test_plugin_model_runs_only_on_workers_that_have_it(client: TestClient) -> None:
    doc = spec_doc("plugin", workload={"model": "my_net", "dataset": "synthetic"})
    refused = client.post("/api/v1/studies", json=doc)
    assert refused.status_code == 422 and "my_net" in refused.json()["detail"][0]["msg"]
    plain = ApiWorker(client, "plain")
    has_plugin = ApiWorker(client, "has-plugin", models=["my_net"])
    assert client.post("/api/v1/studies", json=doc).status_code == 201
    assert plain.lease() == []
    [trial] = has_plugin.lease()
    assert trial["workload"]["model"] == "my_net"
    assert has_plugin.run(trial, [0.1, 0.2, 0.3]).json()["state"] == "completed"


@pytest.mark.parametrize("forged", ["not-the-token", "tökén", ""])
def test_a_heartbeat_with_a_wrong_token_answers_stop(client: TestClient, forged: str) -> None:
    _study(client)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    beat = {"leases": [{"trial_id": trial["trial_id"], "token": forged}]}
    reply = client.post(f"/api/v1/workers/{worker.id}/heartbeat", json=beat)
    assert reply.status_code == 200, reply.text
    assert reply.json()["decisions"] == [{"trial_id": trial["trial_id"], "decision": "stop"}]
    beat = {"leases": [{"trial_id": trial["trial_id"], "token": trial["token"]}]}
    reply = client.post(f"/api/v1/workers/{worker.id}/heartbeat", json=beat)
    assert reply.json()["decisions"] == [{"trial_id": trial["trial_id"], "decision": "continue"}]


def test_a_trial_whose_lease_answer_was_lost_is_handed_out_again(client: TestClient) -> None:
    _study(client, budget={"max_trials": 3, "parallel_trials": 3, "epochs": 1})
    worker = ApiWorker(client)
    [lost] = worker.lease()  # as if the answer never reached the worker
    reply = client.post(f"/api/v1/workers/{worker.id}/lease", json={"count": 1, "held": []})
    [again] = reply.json()["assignments"]
    # The same trial, at once (not after its lease expires), with its attempt not counted.
    assert again["trial_id"] == lost["trial_id"] and again["attempt"] == 1
    assert again["token"] != lost["token"]
    assert worker.report(lost, 1, val_accuracy=0.5).status_code == 409
    assert worker.report(again, 1, val_accuracy=0.5).status_code == 200


def test_trials_the_worker_holds_are_kept(client: TestClient) -> None:
    _study(client, budget={"max_trials": 3, "parallel_trials": 3, "epochs": 1})
    worker = ApiWorker(client)
    [first] = worker.lease()
    reply = client.post(
        f"/api/v1/workers/{worker.id}/lease", json={"count": 1, "held": [first["trial_id"]]}
    )
    [second] = reply.json()["assignments"]
    assert second["trial_id"] != first["trial_id"]
    assert worker.report(first, 1, val_accuracy=0.5).status_code == 200


def test_a_retried_completion_hands_out_the_same_next_trial(client: TestClient) -> None:
    study = _study(client, budget={"max_trials": 3, "parallel_trials": 1, "epochs": 1})
    worker = ApiWorker(client)
    [first] = worker.lease()
    assert worker.report(first, 1, val_accuracy=0.5).status_code == 200
    [lost] = worker.post(first, "complete", lease=1, held=[]).json()["assignments"]
    retried = worker.post(first, "complete", lease=1, held=[]).json()  # the answer was lost
    assert retried["state"] == "completed"
    [again] = retried["assignments"]
    assert again["trial_id"] == lost["trial_id"] and again["attempt"] == 1
    counts = client.get(f"/api/v1/studies/{study['id']}").json()["counts"]
    assert counts["running"] == 1 and counts["completed"] == 1 and counts["queued"] == 0
