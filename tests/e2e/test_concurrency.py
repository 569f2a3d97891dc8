"""Many clients at the same moment against a real `hpo server` on SQLite."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, in_threads, postgres_database, spec_doc

pytestmark = pytest.mark.e2e


def test_grid_with_eight_concurrent_leasing_clients_hands_out_each_point_once(
    processes: Processes, database_url: str
) -> None:
    url = processes.server(HPO_DATABASE_URL=database_url)
    space = {
        "lr": {"type": "float", "values": [0.3, 0.1, 0.03, 0.01]},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.2},
    }
    doc = spec_doc(
        "grid", strategy={"kind": "grid"}, budget={"parallel_trials": 36, "epochs": 1}, space=space
    )
    with httpx.Client(base_url=url, timeout=60) as http:
        study = http.post("/api/v1/studies", json=doc).json()
    assert study["max_trials"] == 36
    handed: list[tuple] = []
    lock = threading.Lock()

    def lease_until_empty(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            worker = ApiWorker(http, f"w{i}")
            while leased := worker.lease(count=2):
                for trial in leased:
                    with lock:
                        handed.append(tuple(sorted(trial["params"].items())))
                    assert worker.run(trial, [0.5]).status_code == 200

    assert in_threads(8, lease_until_empty) == []
    counts = Counter(handed)
    assert len(counts) == 36 and set(counts.values()) == {1}
    with httpx.Client(base_url=url) as http:
        view = http.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed" and view["counts"]["completed"] == 36


def test_eight_workers_reporting_at_once_never_see_database_locked(
    processes: Processes, database_url: str
) -> None:
    url = processes.server(HPO_DATABASE_URL=database_url)
    doc = spec_doc("storm", budget={"max_trials": 32, "parallel_trials": 8, "epochs": 10})
    with httpx.Client(base_url=url, timeout=60) as http:
        study = http.post("/api/v1/studies", json=doc).json()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            worker = ApiWorker(http, f"w{i}")
            while leased := worker.lease():
                trial = leased[0]
                for epoch in range(1, 11):
                    reply = worker.report(
                        trial,
                        epoch,
                        val_accuracy=epoch / 10,
                        train_loss=1.0,
                        val_loss=0.5,
                        lr=0.1,
                        epoch_seconds=0.01,
                    )
                    with lock:
                        statuses[reply.status_code] += 1
                reply = worker.post(trial, "complete")
                with lock:
                    statuses[reply.status_code] += 1

    assert in_threads(8, work) == []
    assert statuses == Counter({200: 32 * 11})
    log = processes.log("server")
    assert "database is locked" not in log and "Traceback" not in log, log
    with httpx.Client(base_url=url) as http:
        view = http.get(f"/api/v1/studies/{study['id']}").json()
        assert view["state"] == "completed" and view["counts"]["completed"] == 32
        page = http.get(f"/api/v1/studies/{study['id']}/trials", params={"limit": 100}).json()
        assert all(t["epochs"] == 10 for t in page["items"])


def test_two_servers_on_one_postgres_hand_each_grid_point_out_once(processes: Processes) -> None:
    with postgres_database() as url:
        servers = [processes.server(name, HPO_DATABASE_URL=url) for name in ("s1", "s2")]
        space = {
            "lr": {"type": "float", "values": [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
        }
        doc = spec_doc(
            "grid24",
            strategy={"kind": "grid"},
            budget={"parallel_trials": 24, "epochs": 1},
            space=space,
        )
        with httpx.Client(base_url=servers[0], timeout=60) as http:
            study = http.post("/api/v1/studies", json=doc).json()
        handed: list[tuple] = []
        lock = threading.Lock()

        def lease_until_empty(i: int) -> None:
            with httpx.Client(base_url=servers[i % 2], timeout=60) as http:
                worker = ApiWorker(http, f"w{i}")
                while leased := worker.lease():
                    with lock:
                        handed.append(tuple(sorted(leased[0]["params"].items())))
                    assert worker.run(leased[0], [0.5]).status_code == 200

        assert in_threads(16, lease_until_empty) == []
        assert len(handed) == 24 and len(set(handed)) == 24
        with httpx.Client(base_url=servers[1]) as http:
            view = http.get(f"/api/v1/studies/{study['id']}").json()
        assert view["state"] == "completed" and view["counts"]["completed"] == 24
        for name in ("s1", "s2"):
            assert "Traceback" not in processes.log(name), processes.log(name)
