"""Successive halving and Hyperband with `sampler: bohb` over HTTP, on SQLite and PostgreSQL:
each proposal is made when its trial is leased, from the model of the largest budget with
enough results by then (issue 13, item 2)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.domain.bohb import CHOICE_ATTR
from service.storage.unit import reading
from tests.conftest import ApiWorker, spec_doc
from tests.service.api.test_multifidelity_api import SH, FakeTrainer

HYPERBAND = {"kind": "hyperband", "min_epochs": 1, "reduction_factor": 3, "seed": 3}


def _choices(client: TestClient, study_id: int) -> list[tuple[int, int, dict[str, Any]]]:
    """(bracket, number, how BOHB proposed it) of each trial, in number order."""
    services = client.app.state.services  # type: ignore[attr-defined]
    with reading(services.db) as stores:
        trials = stores.trials.of_study(study_id)
    storage = services.studies.storage
    return sorted(
        (t.bracket, t.number, storage.get_trial(t.optuna_trial_id).system_attrs[CHOICE_ATTR])
        for t in trials
    )


def test_hyperband_with_bohb_completes_and_later_brackets_use_the_models(
    client: TestClient,
) -> None:
    doc = spec_doc(
        "hb-bohb",
        strategy={**HYPERBAND, "sampler": "bohb"},
        budget={"epochs": 9, "parallel_trials": 1},
    )
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 201, reply.text
    study = reply.json()
    assert study["spec"]["strategy"]["sampler"] == "bohb"
    FakeTrainer(client, ApiWorker(client)).run()
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed"
    assert sum(view["counts"].values()) == 9 + 5 + 3  # the brackets of 1..9 epochs, eta 3
    assert view["best"] is not None

    # Two parameters: a budget's model needs N_min + 2 = 5 results. The first bracket's first
    # five proposals have fewer at every budget, so they are random.
    choices = _choices(client, study["id"])
    assert all(c["budget"] is None for _b, n, c in choices if n < 5)
    modelled = [(bracket, c) for bracket, _n, c in choices if c["budget"] is not None]
    assert modelled, "no proposal came from a model"
    # Brackets are proposed one trial at a time, when a worker leases it: the last bracket's
    # come after the first two have ended, from epoch 3's model (3 + 5 trials reached it, and
    # each earlier trial of this bracket; epoch 9 has 2 to 4 results), never from epoch 1's.
    last = [(n, c) for bracket, n, c in choices if bracket == 2 and c["budget"] is not None]
    assert last and all(c["budget"] == 3 and c["observations"] == 8 + n - 14 for n, c in last)
    random = [c for _b, _n, c in choices if c["budget"] is None and c["reason"].startswith("the r")]
    assert len(random) < len(choices)


def test_successive_halving_with_bohb_completes(client: TestClient) -> None:
    strategy = {**SH, "n_configs": 27, "sampler": "bohb", "random_fraction": 0.5}
    doc = spec_doc("sh-bohb", strategy=strategy, budget={"epochs": 9, "parallel_trials": 2})
    study = client.post("/api/v1/studies", json=doc).json()
    FakeTrainer(client, ApiWorker(client)).run()
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed"
    assert view["counts"]["completed"] == 3 and view["counts"]["pruned"] == 24  # 27, 9, 3
    assert any(c["budget"] == 1 for _b, _n, c in _choices(client, study["id"]))


@pytest.mark.parametrize(
    ("strategy", "field", "words"),
    [
        ({"kind": "tpe", "sampler": "bohb"}, "sampler", "tpe has no rungs"),
        ({"kind": "random", "sampler": "bohb"}, "sampler", "successive_halving"),
        ({**HYPERBAND, "random_fraction": 0.5}, "random_fraction", "only by sampler: bohb"),
        ({**HYPERBAND, "sampler": "bohb", "random_fraction": 1.5}, "random_fraction", "1"),
        ({**HYPERBAND, "sampler": "bohb", "random_fraction": -0.1}, "random_fraction", "0"),
    ],
    ids=["with-tpe", "with-random", "fraction-without-bohb", "fraction-above-1", "negative"],
)
def test_a_misused_bohb_is_refused_naming_the_field(
    client: TestClient, strategy: dict[str, Any], field: str, words: str
) -> None:
    reply = client.post("/api/v1/studies", json=spec_doc("bad-bohb", strategy=strategy))
    assert reply.status_code == 422, reply.text
    first = reply.json()["detail"][0]
    assert first["loc"][:3] == ["body", "strategy", field]
    assert words in first["msg"]
    assert client.get("/api/v1/studies").json() == []
