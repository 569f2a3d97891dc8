"""Creating and reading studies over HTTP: every bad spec is a 4xx naming the field and reason."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import spec_doc

LR = {"type": "float", "low": 1e-4, "high": 0.1, "log": True}


def _error(reply: Any) -> tuple[list[str], str]:
    assert reply.status_code == 422, reply.text
    first = reply.json()["detail"][0]
    return first["loc"], first["msg"]


BAD_SPECS = [
    pytest.param(
        spec_doc(strategy={"kind": "annealing"}),
        ["body", "strategy", "kind"],
        "grid",
        id="unknown-strategy",
    ),
    pytest.param(
        spec_doc(space={"lr": {"type": "float", "low": 0.1, "high": 0.01}}),
        ["body", "space", "lr", "high"],
        "greater than",
        id="low-above-high",
    ),
    pytest.param(
        spec_doc(space={"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}),
        ["body", "space", "lr", "low"],
        "log",
        id="log-with-zero-low",
    ),
    pytest.param(
        spec_doc(space={"norm": {"type": "categorical", "choices": []}}),
        ["body", "space", "norm", "choices"],
        "at least one",
        id="empty-choices",
    ),
    pytest.param(
        spec_doc(strategy={"kind": "grid"}, space={"lr": LR}),
        ["body", "space", "lr"],
        "grid",
        id="grid-over-unbounded-float",
    ),
    pytest.param(
        spec_doc(
            strategy={"kind": "grid"},
            space={
                "a": {"type": "int", "low": 1, "high": 1000},
                "b": {"type": "int", "low": 1, "high": 1000},
            },
        ),
        ["body", "space"],
        "1000000",
        id="grid-too-large",
    ),
    pytest.param(
        spec_doc(workload={"model": "transformer", "dataset": "digits"}),
        ["body", "workload", "model"],
        "transformer",
        id="unknown-model",
    ),
    pytest.param(
        spec_doc(workload={"model": "mlp", "dataset": "imagenet"}),
        ["body", "workload", "dataset"],
        "imagenet",
        id="unknown-dataset",
    ),
    pytest.param(
        spec_doc(
            space={
                "lr": LR,
                "momentum": {
                    "type": "float",
                    "low": 0.5,
                    "high": 0.99,
                    "when": {"optimizer": "sgd"},
                },
            }
        ),
        ["body", "space", "momentum", "when"],
        "optimizer",
        id="when-unknown-param",
    ),
]


@pytest.mark.parametrize(("doc", "loc", "words"), BAD_SPECS)
def test_invalid_spec_is_refused_naming_field_and_reason(
    client: TestClient, doc: dict, loc: list[str], words: str
) -> None:
    got_loc, msg = _error(client.post("/api/v1/studies", json=doc))
    assert got_loc[: len(loc)] == loc
    assert words in msg.replace(",", "")
    assert client.get("/api/v1/studies").json() == []  # nothing was created


def test_duplicate_name_is_409(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=spec_doc("same")).status_code == 201
    reply = client.post("/api/v1/studies", json=spec_doc("same"))
    assert reply.status_code == 409
    assert "same" in reply.json()["detail"]


def test_body_that_is_not_a_spec_is_422_not_500(client: TestClient) -> None:
    for body in (b"[1, 2]", b"{not json", b"\xff\xfe", b'"text"'):
        reply = client.post(
            "/api/v1/studies", content=body, headers={"content-type": "application/json"}
        )
        assert reply.status_code == 422, (body, reply.text)


def test_yaml_body_creates_a_study(client: TestClient) -> None:
    reply = client.post(
        "/api/v1/studies",
        content=yaml.safe_dump(spec_doc("from-yaml")),
        headers={"content-type": "application/yaml"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == "from-yaml"


def test_created_study_has_contract_fields(client: TestClient) -> None:
    study = client.post("/api/v1/studies", json=spec_doc("fields")).json()
    assert {"id", "name", "state", "spec", "counts", "best", "created_at"} <= study.keys()
    assert study["state"] == "running"
    assert study["best"] is None
    assert study["counts"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "completed": 0,
        "pruned": 0,
        "failed": 0,
    }
    assert study["spec"]["budget"]["max_trials"] == 4
    assert client.get(f"/api/v1/studies/{study['id']}").json()["name"] == "fields"


def test_grid_max_trials_defaults_to_grid_size(client: TestClient) -> None:
    doc = spec_doc(
        "grid",
        strategy={"kind": "grid"},
        budget={"epochs": 2},
        space={
            "lr": {"type": "float", "values": [0.1, 0.01, 0.001]},
            "norm": {"type": "categorical", "choices": ["none", "batch"]},
        },
    )
    study = client.post("/api/v1/studies", json=doc).json()
    assert study["max_trials"] == 6


def test_list_is_newest_first(client: TestClient) -> None:
    for name in ("a", "b", "c"):
        client.post("/api/v1/studies", json=spec_doc(name))
    assert [s["name"] for s in client.get("/api/v1/studies").json()] == ["c", "b", "a"]


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/api/v1/studies/99").status_code == 404
    assert client.get("/api/v1/trials/99").status_code == 404
    assert client.post("/api/v1/studies/99/stop").status_code == 404
    assert client.delete("/api/v1/studies/99").status_code == 404
    assert client.get("/api/v1/studies/99/trials").status_code == 404


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/studies",
        "/api/v1/studies/{study_id}",
        "/api/v1/trials/{trial_id}",
        "/api/v1/studies/{study_id}/events",
        "/api/v1/workers",
        "/healthz",
    ):
        assert path in paths


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
