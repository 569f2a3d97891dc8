"""The workers list says which slot of its `hpo worker` command each worker is (hpo worker
--slots): a worker that says nothing (an older one) is slot 0 of 1; nonsense is a 422 that names
the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def _register(client: TestClient, name: str, **capabilities: int) -> int:
    body = {"name": name, "device": "cpu", "capabilities": capabilities}
    reply = client.post("/api/v1/workers/register", json=body)
    return reply.status_code


def test_each_slot_is_listed_with_its_place_among_its_commands(client: TestClient) -> None:
    assert _register(client, "box:7/cpu#0", slot=0, slots=2) == 201
    assert _register(client, "box:8/cpu#1", slot=1, slots=2) == 201
    assert _register(client, "box:9/cpu") == 201  # says nothing of slots
    listed = {w["name"]: (w["slot"], w["slots"]) for w in client.get("/api/v1/workers").json()}
    assert listed == {"box:7/cpu#0": (0, 2), "box:8/cpu#1": (1, 2), "box:9/cpu": (0, 1)}


@pytest.mark.parametrize(("field", "value"), [("slot", -1), ("slots", 0), ("slots", 5000)])
def test_a_slot_out_of_range_is_refused_naming_it(
    client: TestClient, field: str, value: int
) -> None:
    body = {"name": "bad", "capabilities": {field: value}}
    reply = client.post("/api/v1/workers/register", json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "capabilities", field]
    assert client.get("/api/v1/workers").json() == []
