"""`hpo server --processes N`, and several servers on one PostgreSQL database: what must happen
once happens once (reaping, sampling), and every process serves the same service."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.storage.db import Database
from service.storage.unit import reading
from tests.conftest import (
    ApiWorker,
    Processes,
    hpo_command,
    in_threads,
    postgres_database,
    spec_doc,
    wait_for,
)
from tests.support.api import FreshConnections

pytestmark = pytest.mark.e2e


def test_processes_on_sqlite_are_refused_naming_the_option(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        hpo_command("server", "--processes", "2", "--port", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**_env_without_database(), "HPO_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --processes 2 needs PostgreSQL: SQLite has one writer at a time, so the server "
        "runs as one process on it; set HPO_DATABASE_URL (or --database-url) to a "
        "postgresql+psycopg:// URL, or leave --processes at 1"
    )
    assert not (tmp_path / "x.db").exists()  # refused before touching the database
    usage = subprocess.run(
        hpo_command("server", "--processes", "0"), capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    assert "--processes: must be a whole number of at least 1, not '0'" in usage.stderr
    helptext = subprocess.run(
        hpo_command("server", "--help"), capture_output=True, text=True, timeout=60
    ).stdout
    assert "PostgreSQL only" in " ".join(helptext.split())


def test_two_processes_serve_a_study_end_to_end_with_real_workers(
    processes: Processes, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with postgres_database() as database:
        url = processes.server(
            "server",
            "--processes",
            "2",
            HPO_DATABASE_URL=database,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        )
        # A page following the study through another server on the same database: every
        # event it gets was written by the processes of the first one.
        page = processes.server("page", HPO_DATABASE_URL=database)
        doc = spec_doc("two-procs", budget={"max_trials": 6, "parallel_trials": 2, "epochs": 2})
        with httpx.Client(base_url=url, timeout=60) as http:
            study = http.post("/api/v1/studies", json=doc).json()
            streamed: list[tuple[int, str, dict[str, Any]]] = []
            follower = threading.Thread(target=_follow, args=(page, study["id"], streamed))
            follower.start()
            processes.worker("w1", url)
            processes.worker("w2", url)

            def finished() -> dict[str, Any] | None:
                view: dict[str, Any] = http.get(f"/api/v1/studies/{study['id']}").json()
                return view if view["state"] == "completed" else None

            view = wait_for(finished, 240, "the study to complete")
            assert view["counts"]["completed"] == 6 and view["best"] is not None
            trials = http.get(f"/api/v1/studies/{study['id']}/trials").json()["items"]
            assert sorted(t["number"] for t in trials) == list(range(6))
            assert {t["state"] for t in trials} == {"completed"}
            # Both processes answered requests (each writes its own metric files), and a
            # scrape of either one counts every request of both.
            pids = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
            assert len(pids) >= 2, sorted(metrics_dir.iterdir())
            before = _healthz_count(httpx.get(f"{url}/metrics").text)
            for _ in range(20):
                httpx.get(f"{url}/healthz")  # a new connection each: both processes answer
            seen = {_healthz_count(httpx.get(f"{url}/metrics").text) for _ in range(10)}
        assert seen == {before + 20}, (before, seen)
        follower.join(60)
        # The stream delivered every event of the log, in order, ending with the study's end.
        assert [e[0] for e in streamed] == [e.id for e in _events(database, study["id"])]
        assert streamed[-1][1:] == ("study_state", {"state": "completed"})
        started = {e[2]["number"] for e in streamed if e[1] == "trial_started"}
        assert started == set(range(6))


def test_two_servers_reap_each_expired_lease_exactly_once(processes: Processes) -> None:
    with postgres_database() as database:
        env = {"HPO_DATABASE_URL": database, "HPO_LEASE_SECONDS": "4", "HPO_MAX_ATTEMPTS": "3"}
        first = processes.server("a", "--processes", "2", **env)  # two reapers
        second = processes.server("b", **env)  # and a third, as on a second machine
        n = 16
        doc = spec_doc("reaped", budget={"max_trials": n, "parallel_trials": n, "epochs": 3})
        with httpx.Client(base_url=first, timeout=60) as a, httpx.Client(base_url=second) as b:
            study = a.post("/api/v1/studies", json=doc).json()
            worker = ApiWorker(b, "vanishing")  # leases, then never heartbeats
            for attempt in (1, 2, 3):
                leased = worker.lease(count=n)
                assert len(leased) == n, f"attempt {attempt}: {len(leased)} leased"
                expected = "failed" if attempt == 3 else "queued"

                def all_reaped(expected: str = expected) -> list[dict[str, Any]] | None:
                    trials = _trials(a, study["id"])
                    return trials if all(t["state"] == expected for t in trials) else None

                trials = wait_for(all_reaped, 60, f"every lease of attempt {attempt} reaped")
                assert Counter(t["attempt"] for t in trials) == {min(attempt + 1, 3): n}
            assert {t["reason"] for t in _trials(b, study["id"])} == {
                "its worker vanished 3 times (lease expired)"
            }
        # Each trial went back to the queue once per expired lease, never twice.
        states = [(e.trial_id, e.payload.get("state")) for e in _events(database, study["id"])]
        queued = Counter(trial for trial, state in states if trial and state == "queued")
        assert set(queued.values()) == {2} and len(queued) == n
        failed = Counter(trial for trial, state in states if trial and state == "failed")
        assert set(failed.values()) == {1} and len(failed) == n
        assert (None, "failed") in states  # and the study, with every trial failed
        assert processes.process("a").poll() is None and processes.process("b").poll() is None


def test_clients_leasing_across_two_processes_never_share_a_trial_or_a_configuration(
    processes: Processes,
) -> None:
    # A finite space of 12 configurations and 12 trials: the last asks find few untried
    # ones, so two processes sampling at once would pick the same one without the study's
    # sampling lock.
    space = {
        "lr": {"type": "float", "values": [0.1, 0.03, 0.01, 0.003]},
        "norm": {"type": "categorical", "choices": ["none", "batch", "layer"]},
    }
    doc = spec_doc(
        "distinct",
        strategy={"kind": "random", "seed": 3},
        budget={"max_trials": 12, "parallel_trials": 12, "epochs": 1},
        space=space,
    )
    with postgres_database() as database:
        url = processes.server("server", "--processes", "2", HPO_DATABASE_URL=database)
        with httpx.Client(base_url=url, timeout=60) as http:
            study = http.post("/api/v1/studies", json=doc).json()
        handed: list[tuple[int, tuple[Any, ...]]] = []
        lock = threading.Lock()

        def lease_until_empty(i: int) -> None:
            # A fresh connection per request, so that both processes answer every client.
            worker = ApiWorker(FreshConnections(url), f"w{i}")
            while leased := worker.lease(count=1):
                with lock:
                    for trial in leased:
                        handed.append((trial["trial_id"], tuple(sorted(trial["params"].items()))))

        assert in_threads(8, lease_until_empty) == []
        with httpx.Client(base_url=url, timeout=60) as http:
            trials = _trials(http, study["id"])
    assert len(handed) == 12
    assert len({trial_id for trial_id, _ in handed}) == 12  # no trial went to two workers
    assert len({params for _, params in handed}) == 12  # and no configuration twice
    assert {t["state"] for t in trials} == {"running"} and len(trials) == 12


def test_a_server_process_that_dies_is_replaced_and_sigterm_stops_them_all(
    processes: Processes,
) -> None:
    with postgres_database() as database:
        url = processes.server("server", "--processes", "2", HPO_DATABASE_URL=database)
        parent = processes.process("server")
        children = _server_children(parent.pid)
        assert len(children) == 2, children
        os.kill(children[0], signal.SIGKILL)
        replaced = wait_for(
            lambda: (now := _server_children(parent.pid)) and len(now) == 2 and now != children,
            60,
            "the supervisor to start a new server process",
        )
        assert replaced
        assert all(httpx.get(f"{url}/healthz").status_code == 200 for _ in range(10))
        survivors = _server_children(parent.pid)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 0
        for pid in survivors:  # no orphan keeps serving
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"{pid} to exit")


def _server_children(pid: int) -> list[int]:
    """The uvicorn server processes under `pid` (multiprocessing's spawned children, not its
    resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:  # it has just exited
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return sorted(found)


def _follow(url: str, study_id: int, into: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Read the study's event stream from `url` into `into` as (id, kind, data) until the
    study's state event says it completed (or 300 s pass)."""
    kind = ""
    path = f"{url}/api/v1/studies/{study_id}/events"
    with httpx.stream("GET", path, timeout=httpx.Timeout(300, read=300)) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                state = {"state": data["state"]} if kind == "study_state" else data
                into.append((data["id"], kind, state))
                if kind == "study_state" and data["state"] == "completed":
                    return


def _trials(http: httpx.Client, study_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = http.get(
        f"/api/v1/studies/{study_id}/trials", params={"limit": 500}
    ).json()["items"]
    return items


def _events(database: str, study_id: int) -> list[Any]:
    db = Database(database)
    try:
        with reading(db) as stores:
            return stores.events.after(study_id, 0, 10_000)
    finally:
        db.dispose()


def _healthz_count(exposition: str) -> float:
    for line in exposition.splitlines():
        if line.startswith('hpo_http_requests_total{method="GET",route="/healthz",status="200"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _env_without_database() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HPO_DATABASE_URL"}
