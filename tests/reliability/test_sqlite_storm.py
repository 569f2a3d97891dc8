"""SQLite under a storm: many workers leasing, reporting and completing while the page's
endpoints are polled, and what a worker sees when the database is busy for longer than the
server waits for it."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hpo.client import Client
from hpo.protocol import TrialState
from service.app import create_app
from service.settings import Settings
from tests.conftest import Processes, in_threads, spec_doc
from tests.reliability.conftest import get, serving, trials
from trainer.client import WorkerClient

CLIENTS = 32
EPOCHS = 4


def _page_paths(url: str, study_id: int) -> list[str]:
    """Every GET the page (and a user) can make about the study, read from the OpenAPI."""
    paths = httpx.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    return [
        path.format(study_id=study_id)
        for path, operations in paths.items()
        if "get" in operations
        and not path.endswith("/events")
        and set(re.findall(r"{(\w+)}", path)) <= {"study_id"}
    ]


@pytest.mark.e2e
@pytest.mark.slow
def test_32_clients_and_the_page_on_sqlite_see_no_lock_error_and_no_5xx(
    processes: Processes,
) -> None:
    url = processes.server()
    budget = {"max_trials": 2 * CLIENTS, "parallel_trials": CLIENTS, "epochs": EPOCHS}
    with httpx.Client(base_url=url, timeout=60) as http:
        study = http.post("/api/v1/studies", json=spec_doc("storm", budget=budget)).json()
    paths = _page_paths(url, study["id"])
    assert len(paths) >= 5, paths  # the studies, the study, its trials, workers, the page's
    seen: Counter[int] = Counter()
    done = threading.Event()
    lock = threading.Lock()

    def work(i: int) -> None:
        client = WorkerClient(url, retry_seconds=60)  # the worker's own client: it honours 503s
        worker_id = client.register(f"storm-{i}", "host", os.getpid(), "cpu", {}).worker_id
        while leased := client.lease(worker_id):
            trial = leased[0]
            for epoch in range(1, EPOCHS + 1):
                metrics = {"val_accuracy": epoch / 10, "val_loss": 1.0, "train_loss": 1.0}
                assert client.report(worker_id, trial.trial_id, trial.token, epoch, metrics)
            completion = client.complete(worker_id, trial.trial_id, trial.token)
            assert completion.state is TrialState.COMPLETED
        client.close()

    def poll(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not done.is_set():
                for path in paths:
                    status = http.get(path).status_code
                    with lock:
                        seen[status] += 1

    pollers = [threading.Thread(target=poll, args=(i,)) for i in range(2)]
    for poller in pollers:
        poller.start()
    try:
        assert in_threads(CLIENTS, work) == []
    finally:
        done.set()
        for poller in pollers:
            poller.join(60)
    assert set(seen) == {200} and sum(seen.values()) >= len(paths), seen
    log = processes.log("server")
    for trouble in ("database is locked", "database unavailable", "Traceback"):
        assert trouble not in log, log[-3000:]
    with httpx.Client(base_url=url, timeout=60) as http:
        view = get(http, f"/api/v1/studies/{study['id']}")
        assert view["state"] == "completed" and view["counts"]["completed"] == 2 * CLIENTS
        assert [t["epochs"] for t in trials(http, study["id"])] == [EPOCHS] * 2 * CLIENTS


def test_a_busy_database_answers_503_with_retry_after_and_the_worker_waits(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hpo.db"
    settings = Settings(
        database_url=f"sqlite:///{db}", artifacts_dir=tmp_path / "a", sqlite_busy_timeout_s=0.2
    )
    with serving(create_app(settings, reaper=False)) as url:
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 2.5 s
        threading.Timer(2.5, lambda: holder.execute("ROLLBACK")).start()
        started = time.monotonic()
        reply = httpx.post(f"{url}/api/v1/workers/register", json={"name": "w"}, timeout=30)
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "1"
        assert reply.json() == {"detail": "the database is busy or unreachable; retry shortly"}
        assert httpx.get(f"{url}/api/v1/studies", timeout=30).json() == []  # reads go on
        client = WorkerClient(url, retry_seconds=30)
        registered = client.register("patient", "host", os.getpid(), "cpu", {})
        waited = time.monotonic() - started
        assert registered.worker_id == 1 and waited >= 2.0, waited
        client.close()
        user = Client(url)
        assert [w["name"] for w in user.workers()] == ["patient"]
        user.close()
        holder.close()
