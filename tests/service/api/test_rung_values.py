"""Successive halving gives Optuna the value of every epoch a trial stops at, so that its
sampler (TPE, the BOHB-like variant) learns from the trials a rung ends (issue 13, item 2)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.storage.unit import reading
from tests.conftest import ApiWorker, spec_doc
from tests.service.api.test_multifidelity_api import SH, FakeTrainer, _curve


def test_each_stopped_trials_rung_value_is_in_optunas_storage(client: TestClient) -> None:
    doc = spec_doc(
        "sh-tpe", strategy={**SH, "sampler": "tpe"}, budget={"epochs": 9, "parallel_trials": 9}
    )
    study = client.post("/api/v1/studies", json=doc).json()
    FakeTrainer(client, ApiWorker(client)).run()
    assert client.get(f"/api/v1/studies/{study['id']}").json()["state"] == "completed"

    services = client.app.state.services  # type: ignore[attr-defined]
    with reading(services.db) as stores:
        trials = stores.trials.of_study(study["id"])
    stopped = [t for t in trials if t.state.value == "pruned"]
    assert len(stopped) == 8
    storage = services.studies.storage
    for trial in trials:
        optuna_trial = storage.get_trial(trial.optuna_trial_id)
        # every epoch it trained, the one it stopped at included, with the value reported
        assert sorted(optuna_trial.intermediate_values) == list(range(1, trial.epochs + 1))
        last = optuna_trial.intermediate_values[trial.epochs]
        assert last == _curve(trial.params, trial.epochs)
    assert {t.epochs for t in stopped} == {1, 3}
