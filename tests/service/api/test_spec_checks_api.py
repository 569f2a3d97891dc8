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
