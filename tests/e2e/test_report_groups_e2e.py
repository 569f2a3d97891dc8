"""A real `hpo server` (on SQLite; on PostgreSQL with one and with two processes) with 8
workers sending batched reports at once: the batches that wait for a process's writer are
written together (service/api/report_groups.py), and each worker still hears only about its
own items: its decisions, a 409 for a stale item, the same answer for a repeat, every epoch
stored once."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.conftest import ApiWorker, Processes, in_threads, postgres_database, spec_doc

pytestmark = pytest.mark.e2e

WORKERS = 8
TRIALS_EACH = 4
EPOCHS = 6


def _batch(trials: list[dict[str, Any]], epoch: int) -> bytes:
    items = [
        {
            "trial_id": t["trial_id"],
            "token": t["token"],
            "epoch": epoch,
            "metrics": {"val_accuracy": 0.1 * epoch},
        }
        for t in trials
    ]
    return json.dumps({"reports": items}).encode()


@pytest.mark.parametrize("served", ["sqlite", "postgres", "postgres, 2 processes"])
def test_concurrent_batches_keep_every_items_answer(processes: Processes, served: str) -> None:
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if served.startswith("postgres"):
            env["HPO_DATABASE_URL"] = stack.enter_context(postgres_database())
        args = ["--processes", "2"] if served.endswith("2 processes") else []
        url = processes.server("server", *args, **env)
        _send_and_check(url)


def _send_and_check(url: str) -> None:
    trials_total = WORKERS * TRIALS_EACH
    budget = {"max_trials": trials_total, "parallel_trials": trials_total, "epochs": 50}
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/api/v1/studies", json=spec_doc(budget=budget)).status_code == 201
        workers = [ApiWorker(http, f"w{i}") for i in range(WORKERS)]
        held = [worker.lease(count=TRIALS_EACH) for worker in workers]
    # Worker 0 also sends an item of worker 1's first trial with a wrong token: stale.
    stale = {**held[1][0], "token": "not-the-lease"}
    answers: dict[tuple[int, int, int], list[dict[str, Any]]] = {}

    def send(index: int) -> None:
        mine = held[index] + ([stale] if index == 0 else [])
        path = f"/api/v1/workers/{workers[index].id}/reports"
        with httpx.Client(base_url=url, timeout=60) as http:
            for epoch in range(1, EPOCHS + 1):
                for attempt in (0, 1):  # the second is a repeat (a lost answer's retry)
                    reply = http.post(path, content=_batch(mine, epoch))
                    assert reply.status_code == 200, reply.text
                    answers[index, epoch, attempt] = reply.json()["results"]

    assert in_threads(WORKERS, send) == []
    for (index, _epoch, _attempt), results in answers.items():
        expected = [t["trial_id"] for t in held[index]]
        assert [r["trial_id"] for r in results[: len(expected)]] == expected
        assert {(r["status"], r["decision"]) for r in results[: len(expected)]} == {
            (200, "continue")
        }
        if index == 0:
            assert len(results) == len(expected) + 1
            assert results[-1]["trial_id"] == stale["trial_id"]
            assert results[-1]["status"] == 409 and results[-1]["decision"] is None
        else:
            assert len(results) == len(expected)
    with httpx.Client(base_url=url, timeout=60) as http:
        for trials in held:
            for trial in trials:
                view = http.get(f"/api/v1/trials/{trial['trial_id']}").json()
                assert [p["epoch"] for p in view["curve"]] == list(range(1, EPOCHS + 1))
                assert view["state"] == "running" and view["epochs"] == EPOCHS
