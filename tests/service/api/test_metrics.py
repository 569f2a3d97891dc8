"""`GET /metrics`: Prometheus text with the numbers a study driven through the protocol leaves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from service.storage.models import TrialRow, WorkerRow, utcnow
from tests.conftest import USER_TOKEN as USER
from tests.conftest import WORKER_TOKEN as WORKER
from tests.conftest import ApiWorker, spec_doc

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def scrape(client: TestClient, **headers: str) -> Series:
    """GET /metrics and parse it, checking the exposition format on the way: every sample
    belongs to a family announced by HELP and TYPE, and no series appears twice."""
    reply = client.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert reply.text.endswith("\n")
    series: Series = {}
    typed: dict[str, str] = {}
    for line in reply.text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in typed, f"family {name} announced twice"
            typed[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels_text, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or typed.get(family) == "histogram", f"{name} has no TYPE"
        labels = frozenset(_LABEL.findall(labels_text or ""))
        assert (name, labels) not in series, f"duplicate series {line!r}"
        series[(name, labels)] = float(value)
    return series


def value(series: Series, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in series, f"no series {name}{labels}"
    return series[key]


def by_state(series: Series, name: str) -> dict[str, float]:
    return {
        dict(labels)["state"]: v
        for (n, labels), v in series.items()
        if n == name and len(labels) == 1
    }


def test_an_empty_service_reports_zeros(client: TestClient) -> None:
    series = scrape(client)
    assert by_state(series, "hpo_trials") == dict.fromkeys(
        ["queued", "running", "paused", "completed", "pruned", "failed"], 0
    )
    assert by_state(series, "hpo_studies") == dict.fromkeys(
        ["running", "completed", "stopped", "failed"], 0
    )
    assert by_state(series, "hpo_workers") == {"active": 0, "stale": 0, "gone": 0}
    assert value(series, "hpo_leases_active") == 0


def test_counts_follow_a_study_through_the_worker_protocol(client: TestClient) -> None:
    budget = {"max_trials": 4, "parallel_trials": 2, "epochs": 3}
    assert client.post("/api/v1/studies", json=spec_doc("s1", budget=budget)).status_code == 201
    worker = ApiWorker(client, "w1")
    first, second = worker.lease(2)
    series = scrape(client)
    assert value(series, "hpo_trials", state="running") == 2
    assert value(series, "hpo_leases_active") == 2
    assert value(series, "hpo_workers", state="active") == 1

    assert worker.run(first, [0.5, 0.6, 0.7]).status_code == 200
    assert worker.post(second, "fail", reason="CUDA out of memory").status_code == 200
    (third,) = worker.lease(1)
    assert worker.report(third, 1, val_accuracy=0.4, val_loss=0.6).status_code == 200
    # A second study, stopped before it ran anything, and a worker that said goodbye.
    s2 = client.post("/api/v1/studies", json=spec_doc("s2")).json()
    assert client.post(f"/api/v1/studies/{s2['id']}/stop").status_code == 200
    leaving = ApiWorker(client, "w2")
    assert client.post(f"/api/v1/workers/{leaving.id}/deregister").status_code == 204

    series = scrape(client)
    assert by_state(series, "hpo_trials") == {
        "queued": 0,
        "running": 1,
        "paused": 0,
        "completed": 1,
        "pruned": 0,
        "failed": 1,
    }
    assert value(series, "hpo_study_trials", study="s1", state="completed") == 1
    assert value(series, "hpo_study_trials", study="s1", state="failed") == 1
    assert value(series, "hpo_study_trials", study="s1", state="running") == 1
    assert value(series, "hpo_study_trials", study="s2", state="running") == 0
    assert value(series, "hpo_studies", state="running") == 1
    assert value(series, "hpo_studies", state="stopped") == 1
    assert value(series, "hpo_leases_active") == 1
    assert by_state(series, "hpo_workers") == {"active": 1, "stale": 0, "gone": 1}
    # What the API says agrees with what Prometheus is told.
    counts = client.get("/api/v1/studies").json()
    s1 = next(s for s in counts if s["name"] == "s1")
    assert s1["counts"]["completed"] == value(
        series, "hpo_study_trials", study="s1", state="completed"
    )


def test_a_silent_worker_is_stale_and_its_expired_lease_is_not_active(client: TestClient) -> None:
    assert client.post("/api/v1/studies", json=spec_doc()).status_code == 201
    quiet = ApiWorker(client, "quiet")
    (trial,) = quiet.lease(1)
    ApiWorker(client, "alive")
    db = client.app.state.services.db  # type: ignore[attr-defined]
    past = utcnow() - timedelta(hours=1)
    with db.write() as session:
        session.execute(update(WorkerRow).where(WorkerRow.id == quiet.id).values(last_seen_at=past))
        session.execute(
            update(TrialRow).where(TrialRow.id == trial["trial_id"]).values(lease_expires_at=past)
        )
    series = scrape(client)
    assert by_state(series, "hpo_workers") == {"active": 1, "stale": 1, "gone": 0}
    assert value(series, "hpo_leases_active") == 0
    assert value(series, "hpo_leases_expired") == 1
    assert value(series, "hpo_trials", state="running") == 1  # not reaped yet: still running


def test_requests_are_counted_and_timed_by_route_template(client: TestClient) -> None:
    study = client.post("/api/v1/studies", json=spec_doc()).json()
    for _ in range(2):
        assert client.get(f"/api/v1/studies/{study['id']}").status_code == 200
    assert client.get("/api/v1/studies/999").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/healthz").status_code == 200

    series = scrape(client)
    route = "/api/v1/studies/{study_id}"
    total = "hpo_http_requests_total"
    assert value(series, total, method="GET", route=route, status="200") == 2
    assert value(series, total, method="GET", route=route, status="404") == 1
    assert value(series, total, method="POST", route="/api/v1/studies", status="201") == 1
    assert value(series, total, method="GET", route="unmatched", status="404") == 1
    assert not [labels for (_, labels) in series if ("route", "/no/such/page") in labels]

    labels = {"method": "GET", "route": route, "status": "200"}
    hist = "hpo_http_request_duration_seconds"
    assert value(series, f"{hist}_count", **labels) == 2
    assert value(series, f"{hist}_bucket", **labels, le="+Inf") == 2
    assert 0 < value(series, f"{hist}_sum", **labels) < 10
    bounds = sorted(
        (float(dict(ls)["le"]), v)
        for (n, ls), v in series.items()
        if n == f"{hist}_bucket" and dict(ls).items() >= labels.items()
    )
    counts = [v for _, v in bounds]
    assert counts == sorted(counts), "buckets are cumulative"
    assert len(bounds) >= 10

    # The scrape itself is counted on the next one.
    series = scrape(client)
    assert value(series, total, method="GET", route="/metrics", status="200") == 1


def test_metrics_need_the_user_token(secured: TestClient) -> None:
    assert secured.get("/metrics").status_code == 401
    assert secured.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert secured.get("/metrics", headers={"Authorization": f"Bearer {WORKER}"}).status_code == 403
    series = scrape(secured, Authorization=f"Bearer {USER}")
    assert value(series, "hpo_trials", state="queued") == 0


SERVER_PROCESS = """
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings

settings = Settings(database_url=sys.argv[1], artifacts_dir=sys.argv[2])
with TestClient(create_app(settings, reaper=False)) as client:
    for _ in range(int(sys.argv[3])):
        assert client.get("/healthz").status_code == 200
    if sys.argv[4] == "scrape":
        reply = client.get("/metrics")
        assert reply.status_code == 200
        print(reply.text, end="")
"""


def test_multiprocess_mode_reports_the_requests_of_every_server_process(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, one scrape counts the requests of every server process
    sharing the folder (here one that has exited), and the database's gauges once."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    url = f"sqlite:///{tmp_path / 'hpo.db'}"

    def server_process(requests: int, then: str) -> str:
        args = [sys.executable, "-c", SERVER_PROCESS, url, str(tmp_path / "a"), str(requests), then]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    server_process(2, "quiet")
    text = server_process(3, "scrape")
    lines = text.splitlines()
    healthz = 'method="GET",route="/healthz",status="200"'
    assert any(line.startswith("hpo_http_requests_total{") and healthz in line for line in lines)
    total = next(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("hpo_http_requests_total{") and healthz in line
    )
    assert total == 5
    assert [line for line in lines if line.startswith("# TYPE hpo_trials ")] == [
        "# TYPE hpo_trials gauge"
    ]
    assert 'hpo_trials{state="queued"} 0.0' in lines
