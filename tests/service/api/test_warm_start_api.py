"""Warm start: a spec's `initial` configurations are the first trials, in order, checked like
any params; PATCH adds more to a running study."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ApiWorker, spec_doc

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "norm": {"type": "categorical", "choices": ["none", "batch", "layer"]},
    "groups": {"type": "int", "low": 2, "high": 8, "step": 2, "when": {"norm": "layer"}},
}


def _next_params(worker: ApiWorker) -> tuple[int, dict[str, Any]]:
    """Lease the next trial, complete it at once, and return its number and params."""
    [trial] = worker.lease()
    assert worker.run(trial, [0.5]).status_code == 200
    return trial["number"], trial["params"]


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_initial_configurations_are_the_first_trials_in_order(
    client: TestClient, kind: str
) -> None:
    initial = [{"lr": 0.01, "norm": "layer", "groups": 4.0}, {"lr": 0.05}]
    doc = spec_doc(
        "warm",
        strategy={"kind": kind, "seed": 0},
        space=SPACE,
        initial=initial,
        budget={"max_trials": 4, "parallel_trials": 1, "epochs": 1},
    )
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 201, reply.text
    assert reply.json()["spec"]["initial"] == initial
    worker = ApiWorker(client)
    assert _next_params(worker) == (0, {"lr": 0.01, "norm": "layer", "groups": 4})
    number, params = _next_params(worker)
    assert number == 1 and params["lr"] == 0.05 and params["norm"] in ("none", "batch", "layer")
    number, params = _next_params(worker)
    assert number == 2 and params["lr"] not in (0.01, 0.05)  # the sampler's own from here


BAD = [
    pytest.param(
        [{"lrr": 0.01}], ["body", "initial", 0, "lrr"], "not a parameter of the space", id="name"
    ),
    pytest.param(
        [{"lr": 0.01}, {"lr": 0.5}],
        ["body", "initial", 1, "lr"],
        "0.5 is not a value of 'lr': a number from 0.0001 to 0.1",
        id="out-of-range",
    ),
    pytest.param(
        [{"norm": "magic"}],
        ["body", "initial", 0, "norm"],
        "one of 'none', 'batch', 'layer'",
        id="not-a-choice",
    ),
    pytest.param(
        [{"norm": "layer", "groups": 3}],
        ["body", "initial", 0, "groups"],
        "an integer from 2 to 8 in steps of 2",
        id="off-step",
    ),
    pytest.param(
        [{"norm": "batch", "groups": 4}],
        ["body", "initial", 0, "groups"],
        "exists only when norm in ['layer']",
        id="inactive-conditional",
    ),
    pytest.param([{}], ["body", "initial", 0], "at least one parameter", id="empty"),
    pytest.param([{"lr": True}], ["body", "initial", 0, "lr"], "true is not", id="bool"),
]


@pytest.mark.parametrize(("initial", "loc", "message"), BAD)
def test_an_invalid_initial_configuration_is_a_422_naming_it(
    client: TestClient, initial: list[dict[str, Any]], loc: list[Any], message: str
) -> None:
    reply = client.post("/api/v1/studies", json=spec_doc(space=SPACE, initial=initial))
    assert reply.status_code == 422, reply.text
    errors = reply.json()["detail"]
    assert errors[0]["loc"] == loc
    assert message in errors[0]["msg"]
    assert client.get("/api/v1/studies").json() == []  # nothing was created


def test_grid_search_refuses_initial(client: TestClient) -> None:
    space = {"norm": {"type": "categorical", "choices": ["none", "batch"]}}
    doc = spec_doc(strategy={"kind": "grid"}, space=space, initial=[{"norm": "batch"}])
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "initial"]


def test_patch_adds_initial_configurations_to_a_running_study(client: TestClient) -> None:
    doc = spec_doc("warm-later", space=SPACE, budget={"max_trials": 5, "parallel_trials": 1})
    study = client.post("/api/v1/studies", json=doc).json()
    path = f"/api/v1/studies/{study['id']}"
    worker = ApiWorker(client)
    assert _next_params(worker)[0] == 0
    added = [{"lr": 0.003, "norm": "none"}, {"lr": 0.004, "norm": "batch"}]
    reply = client.patch(path, json={"initial": added})
    assert reply.status_code == 200, reply.text
    assert reply.json()["spec"]["initial"] == added
    assert _next_params(worker) == (1, added[0])
    assert _next_params(worker) == (2, added[1])

    bad = client.patch(path, json={"initial": [{"norm": "magic"}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "initial", 0, "norm"]
    for nothing in ({}, {"initial": []}, {"initial": None}):
        assert client.patch(path, json=nothing).status_code == 422, nothing
    both = client.patch(path, json={"initial": [{"lr": 0.005}], "budget": {"max_trials": 6}})
    assert both.status_code == 200 and both.json()["max_trials"] == 6
    assert _next_params(worker)[1]["lr"] == 0.005
