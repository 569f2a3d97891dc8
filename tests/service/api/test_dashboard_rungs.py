"""The rung table, the trial table's rung filter and the parameter views of a successive-halving
study, as the page shows them: per rung the trials trained to it, those promoted past it and the
best value at its epoch; importance and parallel coordinates over every trial at the first rung."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ApiWorker, spec_doc
from tests.service.api.test_multifidelity_api import SH, FakeTrainer, _curve

D = "/api/v1/dashboard/studies"


def _nine_three_one(client: TestClient) -> tuple[int, list[dict[str, Any]]]:
    doc = spec_doc("sh", strategy=SH, budget={"epochs": 9, "parallel_trials": 9})
    study_id = client.post("/api/v1/studies", json=doc).json()["id"]
    FakeTrainer(client, ApiWorker(client)).run()
    trials = client.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 100}).json()
    return study_id, trials["items"]


def test_each_rung_counts_the_trials_trained_to_it_and_its_best_at_its_epoch(
    client: TestClient,
) -> None:
    study_id, trials = _nine_three_one(client)
    rungs = client.get(f"{D}/{study_id}").json()["rungs"]
    assert [(g["rung"], g["epochs"], g["trained"], g["promoted"]) for g in rungs] == [
        (0, 1, 9, 3),
        (1, 3, 3, 1),
        (2, 9, 1, 0),
    ]
    # the best value reached at each rung's epoch, over every trial trained to it (rung 0's best
    # is the eventual winner's epoch-1 value, not the best of the six pruned there)
    for group in rungs:
        reached = [t for t in trials if t["rung"] >= group["rung"]]
        assert group["best"] == pytest.approx(
            max(_curve(t["params"], group["epochs"]) for t in reached)
        )
    pruned_at_0 = [t for t in trials if t["rung"] == 0]
    assert rungs[0]["best"] > max(_curve(t["params"], 1) for t in pruned_at_0)
    assert [g["counts"]["pruned"] for g in rungs] == [6, 2, 0]  # where trials ended


def test_the_table_lists_every_trial_that_reached_a_rung(client: TestClient) -> None:
    study_id, _ = _nine_three_one(client)
    totals = [
        client.get(f"{D}/{study_id}/trials", params={"reached": k}).json()["total"]
        for k in range(3)
    ]
    assert totals == [9, 3, 1]
    now_at = client.get(f"{D}/{study_id}/trials", params={"rung": 1}).json()["total"]
    assert now_at == 2


def test_importance_and_parallel_compare_every_trial_at_the_first_rung(
    client: TestClient,
) -> None:
    study_id, trials = _nine_three_one(client)
    importance = client.get(f"{D}/{study_id}/importance").json()
    assert importance["trials"] == 9 and importance["importances"]
    assert "epoch 1" in importance["basis"]
    parallel = client.get(f"{D}/{study_id}/parallel").json()
    assert len(parallel["lines"]) == parallel["total"] == 9
    assert "first rung" in parallel["basis"]
    at_epoch_1 = {t["number"]: _curve(t["params"], 1) for t in trials}
    for line in parallel["lines"]:
        assert line["value"] == pytest.approx(at_epoch_1[line["number"]])


def test_other_strategies_keep_one_group_and_their_completed_trials(client: TestClient) -> None:
    study_id = client.post("/api/v1/studies", json=spec_doc("tpe")).json()["id"]
    ApiWorker(client).lease(1)
    [group] = client.get(f"{D}/{study_id}").json()["rungs"]
    assert (group["bracket"], group["rung"], group["counts"]["running"]) == (0, 0, 1)
    assert group["epochs"] is group["trained"] is group["promoted"] is None
    assert client.get(f"{D}/{study_id}/parallel").json()["basis"] is None


def test_hyperband_rungs_follow_each_brackets_schedule(client: TestClient) -> None:
    strategy = {"kind": "hyperband", "min_epochs": 1, "reduction_factor": 3, "seed": 1}
    doc = spec_doc("hb", strategy=strategy, budget={"epochs": 9, "parallel_trials": 4})
    study_id = client.post("/api/v1/studies", json=doc).json()["id"]
    FakeTrainer(client, ApiWorker(client)).run()
    rungs = client.get(f"{D}/{study_id}").json()["rungs"]
    # brackets s=2, 1, 0 for 9 epochs and eta 3: 9 -> 3 -> 1, 5 -> 1, 3
    assert [(g["bracket"], g["rung"], g["epochs"], g["trained"], g["promoted"]) for g in rungs] == [
        (0, 0, 1, 9, 3),
        (0, 1, 3, 3, 1),
        (0, 2, 9, 1, 0),
        (1, 0, 3, 5, 1),
        (1, 1, 9, 1, 0),
        (2, 0, 9, 3, 0),
    ]
    importance = client.get(f"{D}/{study_id}/importance").json()
    assert importance["trials"] == 17  # every trial of every bracket trains epoch 1
