"""Hostile input on SQLite and PostgreSQL: each value gets a clear 4xx naming the field, or is
stored faithfully; never a 500, and every list and detail endpoint still answers afterwards."""

from __future__ import annotations

import json
import math
import socket
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, spec_doc
from tests.reliability.conftest import every_view_answers, get, serving

NUL, RLO, RLM = "\x00", "\u202e", "\u200f"
MB = 1024 * 1024
BIG = 2**70  # beyond 64 bits


def _create(client: TestClient, doc: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 201, reply.text
    study: dict[str, Any] = reply.json()
    return study


def _refused(reply: Any, status: int, *loc: str | int) -> None:
    """The answer is `status` and, for 422, names the field at `loc`."""
    assert reply.status_code == status, reply.text
    if status == 422:
        assert [list(loc)] == [err["loc"][: len(loc)] for err in reply.json()["detail"][:1]]


def _raw_json(client: TestClient, path: str, body: str) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_nan_inf_huge_and_negative_zero_in_reports_are_stored_as_reported(
    client: TestClient,
) -> None:
    study = _create(client, spec_doc("numbers", budget={"max_trials": 3, "parallel_trials": 3}))
    worker = ApiWorker(client)
    nan_trial, huge_trial, zero_trial = worker.lease(count=3)
    odd = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "huge": 1e308, "nzero": -0.0}
    assert worker.report(nan_trial, 1, val_accuracy=math.nan, **odd).status_code == 200
    # 1e999 overflows to inf when parsed; 2**70 is a float metric like any other.
    body = f'{{"token": "{huge_trial["token"]}", "epoch": 1, "metrics": '
    body += '{"val_accuracy": 1e308, "big": 1180591620717411303424, "over": 1e999}}'
    path = f"/api/v1/workers/{worker.id}/trials/{huge_trial['trial_id']}/report"
    assert _raw_json(client, path, body).status_code == 200
    assert worker.report(zero_trial, 1, val_accuracy=-0.0).status_code == 200

    stored = client.app.state.services.studies  # type: ignore[attr-defined]
    [nan_point] = stored.trial(nan_trial["trial_id"]).curve
    assert math.isnan(nan_point.metrics["nan"]) and math.isnan(nan_point.metrics["val_accuracy"])
    assert nan_point.metrics["inf"] == math.inf and nan_point.metrics["ninf"] == -math.inf
    assert nan_point.metrics["huge"] == 1e308
    assert math.copysign(1.0, nan_point.metrics["nzero"]) == -1.0
    [huge_point] = stored.trial(huge_trial["trial_id"]).curve
    assert huge_point.metrics == {"val_accuracy": 1e308, "big": float(BIG), "over": math.inf}

    # Over the API: non-finite numbers are sent as null (JSON has neither), the rest as stored.
    shown = get(client, f"/api/v1/trials/{nan_trial['trial_id']}")["curve"][0]["metrics"]
    assert shown == {"val_accuracy": None, **odd, "nan": None, "inf": None, "ninf": None}
    assert math.copysign(1.0, shown["nzero"]) == -1.0

    nan_done = worker.post(nan_trial, "complete").json()
    assert nan_done["state"] == "failed"
    assert (
        nan_done["reason"] == "objective 'val_accuracy' was not a finite number at the last report"
    )
    assert worker.post(huge_trial, "complete").json()["value"] == 1e308
    assert worker.post(zero_trial, "complete").json()["value"] == 0.0
    view = get(client, f"/api/v1/studies/{study['id']}")
    assert view["state"] == "completed" and view["best"]["value"] == 1e308
    assert view["counts"]["completed"] == 2 and view["counts"]["failed"] == 1
    every_view_answers(client, study["id"])


def test_nul_bytes_are_refused_in_names_and_kept_in_param_values(client: TestClient) -> None:
    _refused(client.post("/api/v1/studies", json=spec_doc(f"a{NUL}b")), 422, "body", "name")
    register = {"name": f"w{NUL}", "capabilities": {}}
    _refused(client.post("/api/v1/workers/register", json=register), 422, "body", "name")
    register = {"name": "w", "host": NUL, "capabilities": {}}
    _refused(client.post("/api/v1/workers/register", json=register), 422, "body", "host")

    # A categorical value is data: stored and handed out byte for byte.
    space = {"tag": {"type": "categorical", "choices": [f"a{NUL}b"]}}
    repeats = {"kind": "random", "seed": 0, "allow_repeats": True}  # two trials of one choice
    study = _create(client, spec_doc("nul-choice", space=space, strategy=repeats))
    assert study["spec"]["space"]["tag"]["choices"] == [f"a{NUL}b"]
    worker = ApiWorker(client)
    trial, other = worker.lease(count=2)
    assert trial["params"] == {"tag": f"a{NUL}b"}
    reply = worker.report(trial, 1, **{f"val{NUL}": 0.5})
    _refused(reply, 422, "body", "metrics")
    _refused(worker.post(other, "fail", reason=f"bad{NUL}data"), 422, "body", "reason")
    detail = get(client, f"/api/v1/trials/{trial['trial_id']}")
    assert detail["curve"] == [] and detail["state"] == "running"
    assert get(client, f"/api/v1/trials/{other['trial_id']}")["state"] == "running"
    assert [t["params"] for t in get(client, f"/api/v1/studies/{study['id']}/trials")["items"]] == [
        {"tag": f"a{NUL}b"}
    ] * 2
    every_view_answers(client, study["id"])


def test_megabyte_strings_are_refused_where_bounded_and_stored_where_data(
    client: TestClient,
) -> None:
    long = "x" * MB
    reply = client.post("/api/v1/studies", json=spec_doc(long))
    _refused(reply, 422, "body")
    assert "larger than 1000000 bytes" in reply.text
    _refused(client.post("/api/v1/workers/register", json={"name": long}), 422, "body", "name")
    # Just under the spec's size limit, a long choice is stored and handed out whole.
    choice = "y" * 900_000
    study = _create(
        client, spec_doc("long-choice", space={"c": {"type": "categorical", "choices": [choice]}})
    )
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert trial["params"] == {"c": choice}
    assert worker.report(trial, 1, **{long: 1.0, "val_accuracy": 0.5}).status_code == 200
    _refused(worker.post(trial, "fail", reason=long), 422, "body", "reason")
    detail = get(client, f"/api/v1/trials/{trial['trial_id']}")
    assert detail["params"] == {"c": choice} and detail["curve"][0]["metrics"][long] == 1.0
    every_view_answers(client, study["id"])


def test_right_to_left_marks_are_refused_in_study_names_and_shown_as_sent_elsewhere(
    client: TestClient,
) -> None:
    reply = client.post("/api/v1/studies", json=spec_doc(f"evil{RLO}gpj.exe"))
    _refused(reply, 422, "body", "name")
    space = {"tag": {"type": "categorical", "choices": [f"{RLO}abc", f"{RLM}x"]}}
    budget = {"parallel_trials": 2}
    study = _create(client, spec_doc("rtl", strategy={"kind": "grid"}, space=space, budget=budget))
    worker = ApiWorker(client, f"{RLO}rekrow")
    trials = worker.lease(count=2)
    assert sorted(t["params"]["tag"] for t in trials) == sorted([f"{RLO}abc", f"{RLM}x"])
    assert worker.report(trials[0], 1, **{f"{RLM}acc": 0.5}).status_code == 200
    assert get(client, "/api/v1/workers")[0]["name"] == f"{RLO}rekrow"
    detail = get(client, f"/api/v1/trials/{trials[0]['trial_id']}")
    assert detail["worker"] == f"{RLO}rekrow" and detail["curve"][0]["metrics"] == {
        f"{RLM}acc": 0.5
    }
    every_view_answers(client, study["id"])


def test_json_nested_10000_deep_is_a_4xx_on_every_body_route(client: TestClient) -> None:
    study = _create(client, spec_doc("deep"))
    worker = ApiWorker(client)
    [trial] = worker.lease()
    deep = "[" * 10_000 + "]" * 10_000
    deep_object = '{"a":' * 10_000 + "1" + "}" * 10_000
    trial_path = f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}"
    routes = [
        ("POST", "/api/v1/studies"),
        ("PATCH", f"/api/v1/studies/{study['id']}"),
        ("POST", "/api/v1/workers/register"),
        ("POST", f"/api/v1/workers/{worker.id}/lease"),
        ("POST", f"/api/v1/workers/{worker.id}/heartbeat"),
        ("POST", f"{trial_path}/report"),
        ("POST", f"{trial_path}/fail"),
        ("POST", "/api/v1/session"),
    ]
    for method, path in routes:
        for body in (deep, deep_object):
            reply = client.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
            assert reply.status_code in (400, 422), (path, reply.status_code, reply.text[:200])
            assert reply.json()["detail"]
    yaml_reply = client.post(
        "/api/v1/studies", content=deep, headers={"content-type": "application/yaml"}
    )
    _refused(yaml_reply, 422, "body")
    assert get(client, f"/api/v1/trials/{trial['trial_id']}")["state"] == "running"
    every_view_answers(client, study["id"])


def test_integers_beyond_64_bits_are_422_or_stored_exactly(client: TestClient) -> None:
    space = {
        "n": {"type": "categorical", "choices": [BIG]},
        "m": {"type": "int", "low": -BIG, "high": BIG},
    }
    study = _create(client, spec_doc("bigint", space=space, budget={"max_trials": 2}))
    assert study["spec"]["space"]["n"]["choices"] == [BIG]
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert trial["params"]["n"] == BIG and isinstance(trial["params"]["m"], int)
    assert -BIG <= trial["params"]["m"] <= BIG
    assert get(client, f"/api/v1/trials/{trial['trial_id']}")["params"] == trial["params"]

    budget = {"max_trials": BIG, "parallel_trials": 1, "epochs": 1}
    _refused(
        client.post("/api/v1/studies", json=spec_doc("b", budget=budget)),
        422,
        "body",
        "budget",
        "max_trials",
    )
    sh = {"kind": "successive_halving", "n_configs": BIG}
    _refused(
        client.post("/api/v1/studies", json=spec_doc("c", strategy=sh)),
        422,
        "body",
        "strategy",
        "n_configs",
    )
    patch = {"budget": {"max_trials": BIG}}
    _refused(
        client.patch(f"/api/v1/studies/{study['id']}", json=patch),
        422,
        "body",
        "budget",
        "max_trials",
    )
    lease_body = {"count": BIG}
    _refused(
        client.post(f"/api/v1/workers/{worker.id}/lease", json=lease_body), 422, "body", "count"
    )
    beat = {"leases": [{"trial_id": BIG, "token": trial["token"]}]}
    _refused(
        client.post(f"/api/v1/workers/{worker.id}/heartbeat", json=beat), 422, "body", "leases"
    )
    _refused(worker.report(trial, BIG, val_accuracy=0.5), 422, "body", "epoch")
    _refused(
        client.post("/api/v1/workers/register", json={"name": "w", "pid": BIG}), 422, "body", "pid"
    )
    _refused(client.get(f"/api/v1/studies/{study['id']}/trials?after={BIG}"), 422, "query", "after")
    _refused(
        client.get(f"/api/v1/studies/{study['id']}/events", headers={"Last-Event-ID": str(BIG)}),
        422,
        "header",
    )

    # Every path id, in every route that takes one, beyond 2**31 (PostgreSQL) and 2**63 (SQLite).
    paths = client.get("/openapi.json").json()["paths"]
    for big_id in (2**31, 2**63, BIG):
        for path, operations in paths.items():
            if "{" not in path:
                continue
            url = path.format(
                study_id=big_id, trial_id=big_id, worker_id=big_id, checkpoint_id="0" * 32
            )
            for method in operations:
                reply = client.request(method.upper(), url, json={})
                assert reply.status_code == 422, (method, url, reply.status_code, reply.text[:200])
    every_view_answers(client, study["id"])


def _answer_to_unsent_body(host: str, port: int, head: str) -> str:
    """Send the request head and 1 KB of the body it announces, then read the whole answer: it
    can only come while nearly all of the body is still unsent."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode() + b"{" * 1024)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode()


def test_a_50_mb_body_is_refused_with_413_before_it_is_read(tmp_path: Any) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hpo.db'}", artifacts_dir=tmp_path / "a"
    )
    app = create_app(settings, reaper=False)
    with serving(app) as url:
        host, port = url.removeprefix("http://").split(":")
        for path in (
            "/api/v1/studies",
            "/api/v1/workers/register",
            "/api/v1/workers/1/trials/1/checkpoint?epoch=1",
        ):
            method = "PUT" if path.endswith("epoch=1") else "POST"
            limit = 10 * MB if method == "POST" else 4 * 1024**3
            size = 50 * MB if method == "POST" else 5 * 1024**3
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            answer = _answer_to_unsent_body(
                host, int(port), f"{head}Content-Length: {size}\r\n\r\n"
            )
            assert answer.startswith("HTTP/1.1 413 "), answer[:300]
            body = json.loads(answer.split("\r\n\r\n", 1)[1])
            assert body == {"detail": f"the request body is larger than the limit of {limit} bytes"}
        # Streamed without a declared length, the body is counted and cut off at the limit.
        with TestClient(app) as client:
            chunks = (b" " * MB for _ in range(50))
            reply = client.post(
                "/api/v1/studies", content=chunks, headers={"content-type": "application/json"}
            )
            _refused(reply, 413)
            assert client.get("/api/v1/studies").json() == []
