"""What the server checks in a spec beyond its shape, over HTTP: the objective's direction and
the built-in trainer's tunables. Each refusal is a 422 naming the field, and nothing is created."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import spec_doc


def _refused(client: TestClient, doc: dict[str, Any]) -> tuple[list[Any], str]:
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 422, reply.text
    first = reply.json()["detail"][0]
    assert client.get("/api/v1/studies").json() == []  # nothing was created
    return first["loc"], first["msg"]


@pytest.mark.parametrize(
    ("metric", "direction"), [("val_loss", "minimize"), ("val_accuracy", "maximize")]
)
def test_direction_left_out_is_inferred_from_the_metric(
    client: TestClient, metric: str, direction: str
) -> None:
    reply = client.post("/api/v1/studies", json=spec_doc(objective={"metric": metric}))
    assert reply.status_code == 201, reply.text
    assert reply.json()["spec"]["objective"] == {"metric": metric, "direction": direction}


def test_a_metric_with_no_inferable_direction_is_refused(client: TestClient) -> None:
    loc, msg = _refused(client, spec_doc(objective={"metric": "epoch_seconds"}))
    assert loc == ["body", "objective", "direction"]
    assert "cannot tell whether to maximize or minimize metric 'epoch_seconds'" in msg


def _with(space: dict[str, Any] | None = None, **workload: Any) -> dict[str, Any]:
    doc = spec_doc()
    doc["space"] = {"lr": doc["space"]["lr"], **(space or {})}
    doc["workload"] = {**doc["workload"], **workload}
    return doc


# Each of these was created with 201 before the server checked tunables (issue 13, item 1).
REFUSED = [
    pytest.param(_with(norm="magic"), ["workload", "norm"], "'group', 'instance'", id="norm"),
    pytest.param(
        _with({"dropout": {"type": "float", "low": 0.0, "high": 1.5}}),
        ["space", "dropout", "high"],
        "must be < 1.0, got 1.5; it takes a number >= 0.0 and < 1.0",
        id="dropout-range",
    ),
    pytest.param(
        _with(dropout=1.0), ["workload", "dropout"], "must be < 1.0, got 1.0", id="dropout-fixed"
    ),
    pytest.param(
        _with({"batch_size": {"type": "categorical", "choices": [0, 32, 64]}}),
        ["space", "batch_size", "choices"],
        "must be >= 1, got 0; it takes an integer >= 1",
        id="batch-size-zero",
    ),
    pytest.param(
        _with(optimizer="sgd", momentum=1.5),
        ["workload", "momentum"],
        "must be < 1.0, got 1.5; it takes a number >= 0.0 and < 1.0",
        id="momentum",
    ),
    pytest.param(
        _with(weight_decay=-0.01),
        ["workload", "weight_decay"],
        "must be >= 0.0, got -0.01",
        id="negative-weight-decay",
    ),
    pytest.param(
        {
            **_with(norm="group", groups=5),
            "workload": {"model": "cnn", "dataset": "digits", "norm": "group", "groups": 5},
        },
        ["workload", "groups"],
        "every layer width of the cnn (`channels` 32): 5 does not; choose among 1, 2, 4, 8",
        id="groups-5-cnn",
    ),
]


@pytest.mark.parametrize(("doc", "loc", "words"), REFUSED)
def test_a_value_the_trainer_refuses_is_a_422_before_anything_is_created(
    client: TestClient, doc: dict[str, Any], loc: list[str], words: str
) -> None:
    got, msg = _refused(client, doc)
    assert got == ["body", *loc]
    assert words in msg


def test_tunables_are_listed(client: TestClient) -> None:
    reply = client.get("/api/v1/tunables")
    assert reply.status_code == 200
    items = {(t["name"], tuple(t["models"])): t for t in reply.json()["items"]}
    dropout = items[("dropout", ("mlp", "cnn", "resnet"))]
    assert (dropout["low"], dropout["high"], dropout["high_open"]) == (0.0, 1.0, True)
    assert dropout["allows"] == "a number >= 0.0 and < 1.0"
    assert items[("momentum", ())]["read_for"] == "optimizer sgd"
    assert items[("channels", ("cnn",))]["default"] == 32
    assert items[("norm", ())]["choices"] == [
        "none",
        "batch",
        "layer",
        "group",
        "instance",
        "weight",
        "selu",
    ]


def test_a_worker_receives_the_trainer_param_a_parameter_sets(client: TestClient) -> None:
    from tests.conftest import ApiWorker

    wd = {"type": "float", "low": 1e-5, "high": 1e-3, "log": True, "param": "weight_decay"}
    space = {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "wd_sgd": {**wd, "when": {"optimizer": "sgd"}},
        "wd_adamw": {**wd, "low": 1e-3, "high": 1e-1, "when": {"optimizer": "adamw"}},
    }
    study = client.post("/api/v1/studies", json=_with(space))
    assert study.status_code == 201, study.text
    for trial in ApiWorker(client).lease(count=4):
        params = trial["params"]
        assert set(params) == {"lr", "optimizer", "weight_decay"}
        low, high = (1e-5, 1e-3) if params["optimizer"] == "sgd" else (1e-3, 1e-1)
        assert low <= params["weight_decay"] <= high
        shown = client.get(f"/api/v1/trials/{trial['trial_id']}").json()["params"]
        assert set(shown) == {"lr", "optimizer", f"wd_{params['optimizer']}"}  # the space's names


HIDDEN = {"name": "hidden", "type": "int", "default": 64, "low": 1, "description": "units"}


def test_a_plugin_models_declared_tunables_are_checked(client: TestClient) -> None:
    from tests.conftest import ApiWorker

    ApiWorker(client, models=["two_layer"], tunables=[{**HIDDEN, "models": ["two_layer"]}])
    plugin = {"model": "two_layer", "dataset": "digits"}
    loc, msg = _refused(client, {**spec_doc(), "workload": {**plugin, "hidden": 0}})
    assert loc == ["body", "workload", "hidden"]
    assert "`hidden` must be >= 1, got 0; it takes an integer >= 1" in msg
    # values it declares nothing about are its own business
    doc = {**spec_doc(), "workload": {**plugin, "hidden": 16, "dropout": 1.5}}
    assert client.post("/api/v1/studies", json=doc).status_code == 201
