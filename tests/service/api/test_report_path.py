"""The batched report's short way (service/api/report_path.py): a request the route would take
is answered before FastAPI's routing, with the route's answer; every other request reaches the
route and gets the route's own refusal."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from service.api.deps import get_protocol
from service.api.report_groups import POSTGRES_GROUPED_ITEMS, REPORTS_THREAD
from service.storage.dialect import is_sqlite
from tests.conftest import WORKER_TOKEN, ApiWorker, spec_doc


def _leased(client: TestClient, count: int = 2) -> tuple[ApiWorker, list[dict[str, Any]]]:
    budget = {"max_trials": 4, "parallel_trials": 4, "epochs": 5}
    reply = client.post("/api/v1/studies", json=spec_doc(budget=budget))
    assert reply.status_code == 201, reply.text
    worker = ApiWorker(client)
    return worker, worker.lease(count=count)


def _body(trials: list[dict[str, Any]], epoch: int) -> bytes:
    items = [
        {
            "trial_id": t["trial_id"],
            "token": t["token"],
            "epoch": epoch,
            "metrics": {"val_accuracy": 0.5},
        }
        for t in trials
    ]
    return json.dumps({"reports": items}).encode()


def _chunked(body: bytes) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, without a Content-Length."""
    yield body[: len(body) // 2]
    yield body[len(body) // 2 :]


def _route_unreachable(client: TestClient) -> None:
    """The route itself now fails (its protocol dependency raises): only the short way answers."""

    async def broken() -> Any:
        raise RuntimeError("the route was called")

    client.app.dependency_overrides[get_protocol] = broken  # type: ignore[attr-defined]


def test_a_batch_is_answered_without_the_route(client: TestClient) -> None:
    worker, trials = _leased(client)
    _route_unreachable(client)
    url = f"/api/v1/workers/{worker.id}/reports"
    reply = client.post(url, content=_body(trials, 1))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "results": [
            {"trial_id": t["trial_id"], "status": 200, "decision": "continue", "detail": None}
            for t in trials
        ]
    }
    client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    curve = client.get(f"/api/v1/trials/{trials[0]['trial_id']}").json()["curve"]
    assert [point["epoch"] for point in curve] == [1]


def test_a_chunked_batch_goes_to_the_route_with_the_same_answer(client: TestClient) -> None:
    worker, trials = _leased(client)
    url = f"/api/v1/workers/{worker.id}/reports"
    short = client.post(url, content=_body(trials, 1)).json()
    routed = client.post(url, content=_chunked(_body(trials, 2)))
    assert routed.status_code == 200, routed.text
    assert routed.json() == short
    # The short way did not take it: with the route unreachable a chunked batch fails.
    _route_unreachable(client)
    failed = TestClient(client.app, raise_server_exceptions=False).post(
        url, content=_chunked(_body(trials, 3))
    )
    assert failed.status_code == 500


def test_refusals_are_the_routes_own(client: TestClient) -> None:
    worker, trials = _leased(client)
    url = f"/api/v1/workers/{worker.id}/reports"
    bad_epoch = json.loads(_body(trials, 1))
    bad_epoch["reports"][1]["epoch"] = 0
    reply = client.post(url, content=json.dumps(bad_epoch))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "reports", 1, "epoch"]
    reply = client.post("/api/v1/workers/0/reports", content=_body(trials, 1))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["path", "worker_id"]
    assert client.get(url).status_code == 405
    stale = [{**trials[0], "token": "not-the-lease"}, trials[1]]
    results = client.post(url, content=_body(stale, 1)).json()["results"]
    assert [(r["status"], r["decision"]) for r in results] == [(409, None), (200, "continue")]


def test_tokens_are_checked_before_the_body(secured: TestClient) -> None:
    auth = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    reply = secured.post(
        "/api/v1/studies", json=spec_doc(), headers={"Authorization": "Bearer user-secret-token"}
    )
    assert reply.status_code == 201, reply.text
    worker = secured.post("/api/v1/workers/register", json={"name": "w"}, headers=auth).json()
    url = f"/api/v1/workers/{worker['worker_id']}/reports"
    lease = secured.post(url.replace("reports", "lease"), json={"count": 1}, headers=auth)
    trials = lease.json()["assignments"]
    missing = secured.post(url, content=_body(trials, 1))
    assert missing.status_code == 401
    assert missing.json()["detail"].startswith("missing or invalid token")
    wrong = secured.post(url, content=_body(trials, 1), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    reply = secured.post(url, content=_body(trials, 1), headers=auth)
    assert reply.status_code == 200 and reply.json()["results"][0]["decision"] == "continue"


def test_a_busy_database_is_a_503_to_retry(client: TestClient, monkeypatch: Any) -> None:
    worker, trials = _leased(client)
    reporting = client.app.state.services.protocol.reporting  # type: ignore[attr-defined]

    def busy(_items: Any) -> Any:
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    monkeypatch.setattr(reporting, "report_many", busy)
    reply = client.post(f"/api/v1/workers/{worker.id}/reports", content=_body(trials, 1))
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    assert reply.json()["detail"] == "the database is busy or unreachable; retry shortly"


def test_the_metrics_count_it_under_the_routes_template(client: TestClient) -> None:
    worker, trials = _leased(client)
    for epoch in (1, 2):
        client.post(f"/api/v1/workers/{worker.id}/reports", content=_body(trials, epoch))
    text = client.get("/metrics").text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("hpo_http_requests_total")
        and 'route="/api/v1/workers/{worker_id}/reports"' in line
        and 'status="200"' in line
    )
    assert line.endswith(" 2.0")


def _threads_of_report_many(reporting: Any, monkeypatch: Any) -> list[str]:
    """The name of the thread of each `report_many` call from now on, in order."""
    real = reporting.report_many
    threads: list[str] = []

    def noted(items: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(items)

    monkeypatch.setattr(reporting, "report_many", noted)
    return threads


def test_batches_run_on_one_thread_of_their_own(client: TestClient, monkeypatch: Any) -> None:
    """Every batch runs on the one `hpo-reports` thread of the process, on SQLite (its writers
    take turns anyway) and on PostgreSQL (in the thread pool, 8 batches side by side spent
    most of their time waiting for the GIL and their turn on the cores)."""
    worker, trials = _leased(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    threads = _threads_of_report_many(services.protocol.reporting, monkeypatch)
    url = f"/api/v1/workers/{worker.id}/reports"
    for epoch in (1, 2, 3):
        reply = client.post(url, content=_body(trials, epoch))
        assert reply.status_code == 200, reply.text
        assert [r["decision"] for r in reply.json()["results"]] == ["continue", "continue"]
    assert len(threads) == 3
    assert len(set(threads)) == 1 and threads[0].startswith(REPORTS_THREAD), threads
    curve = client.get(f"/api/v1/trials/{trials[1]['trial_id']}").json()["curve"]
    assert [point["epoch"] for point in curve] == [1, 2, 3]


def test_postgresqls_larger_batches_run_in_the_thread_pool(
    client: TestClient, monkeypatch: Any
) -> None:
    """PostgreSQL: a batch of more than POSTGRES_GROUPED_ITEMS items runs in the app's thread
    pool, beside the writer (8 batches of 128 side by side recorded more than one writer
    did); SQLite: every batch waits for the writer."""
    worker, trials = _leased(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    groups = client.app.state.report_groups  # type: ignore[attr-defined]
    postgres = not is_sqlite(services.settings.database_url)
    assert groups.max_batch_items == (POSTGRES_GROUPED_ITEMS if postgres else None)
    monkeypatch.setattr(groups, "max_batch_items", 1 if postgres else None)
    threads = _threads_of_report_many(services.protocol.reporting, monkeypatch)
    url = f"/api/v1/workers/{worker.id}/reports"
    reply = client.post(url, content=_body(trials, 1))  # 2 items
    assert reply.status_code == 200, reply.text
    assert [r["decision"] for r in reply.json()["results"]] == ["continue", "continue"]
    reply = client.post(url, content=_body(trials[:1], 2))  # 1 item
    assert reply.status_code == 200, reply.text
    on_writer = [name.startswith(REPORTS_THREAD) for name in threads]
    assert on_writer == ([False, True] if postgres else [True, True]), threads
