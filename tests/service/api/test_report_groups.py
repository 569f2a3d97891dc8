"""The group commit of batched reports (service/api/report_groups.py), on SQLite and
PostgreSQL: the batches that wait for the writer are written in one `report_many` call, and
each hears what it would have heard alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from hpo.protocol import TrialReport
from service.api.report_groups import REPORTS_THREAD, ReportGroups
from tests.conftest import ApiWorker, spec_doc
from tests.service.api.test_report_path import _body


def _item(trial_id: int, epoch: int = 1) -> TrialReport:
    return TrialReport(trial_id=trial_id, token="t", epoch=epoch, metrics={"val_accuracy": 0.5})


class Writer:
    """A fake `report_many`: answers `trial_id * 10 + epoch` per item, records each call's
    trial ids, blocks its first call until `release`, and raises for a trial in `bad`."""

    def __init__(self, bad: dict[int, Exception] | None = None) -> None:
        self.calls: list[list[int]] = []
        self.bad = bad or {}
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self, items: Sequence[TrialReport]) -> list[Any]:
        self.calls.append([item.trial_id for item in items])
        if len(self.calls) == 1:
            self.started.set()
            assert self.go.wait(10)
        for item in items:
            if item.trial_id in self.bad:
                raise self.bad[item.trial_id]
        return [item.trial_id * 10 + item.epoch for item in items]


async def _send(groups: ReportGroups, writer: Writer, batches: list[list[TrialReport]]) -> Any:
    """The first batch occupies the writer; the others wait for it, then are written."""
    first = asyncio.ensure_future(groups.report(writer, batches[0]))
    await asyncio.get_running_loop().run_in_executor(None, writer.started.wait, 10)
    rest = [asyncio.ensure_future(groups.report(writer, batch)) for batch in batches[1:]]
    await asyncio.sleep(0.05)  # every one of them waiting
    writer.go.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_waiting_batches_are_written_in_one_call() -> None:
    writer = Writer()
    batches = [[_item(1)], [_item(2), _item(3, 2)], [_item(4)], [_item(5)]]
    answers = asyncio.run(_send(ReportGroups(), writer, batches))
    assert answers == [[11], [21, 32], [41], [51]]
    assert writer.calls == [[1], [2, 3, 4, 5]]


def test_a_batch_sharing_a_trial_starts_the_next_group_in_order() -> None:
    writer = Writer()
    batches = [[_item(1)], [_item(2)], [_item(2, 2), _item(3)], [_item(4)]]
    answers = asyncio.run(_send(ReportGroups(), writer, batches))
    assert answers == [[11], [21], [22, 31], [41]]
    assert writer.calls == [[1], [2], [2, 3, 4]]


def test_groups_stop_at_their_size() -> None:
    writer = Writer()
    batches = [[_item(1)], [_item(2), _item(3)], [_item(4)], [_item(5), _item(6)]]
    answers = asyncio.run(_send(ReportGroups(max_items=3), writer, batches))
    assert answers == [[11], [21, 31], [41], [51, 61]]
    assert writer.calls == [[1], [2, 3, 4], [5, 6]]


def test_a_failing_batch_fails_alone() -> None:
    writer = Writer(bad={3: ValueError("trial 3's item")})
    batches = [[_item(1)], [_item(2)], [_item(3)], [_item(4)]]
    answers = asyncio.run(_send(ReportGroups(), writer, batches))
    assert answers[:2] == [[11], [21]] and answers[3] == [41]
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "trial 3's item"
    assert writer.calls == [[1], [2, 3, 4], [2], [3], [4]]


def test_a_busy_database_answers_the_whole_group_to_retry() -> None:
    busy = OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
    writer = Writer(bad={3: busy})
    batches = [[_item(1)], [_item(2)], [_item(3)]]
    answers = asyncio.run(_send(ReportGroups(), writer, batches))
    assert answers[0] == [11]
    assert answers[1] is busy and answers[2] is busy
    assert writer.calls == [[1], [2, 3]]


def test_a_batch_above_the_limit_is_not_taken() -> None:
    assert ReportGroups().takes([_item(t) for t in range(2000)])  # SQLite's: any size
    limited = ReportGroups(max_batch_items=2)
    assert limited.takes([_item(1), _item(2)])
    assert not limited.takes([_item(1), _item(2), _item(3)])


def test_batches_the_writer_does_not_take_run_beside_it_a_few_at_once() -> None:
    """PostgreSQL's larger batches: in the thread pool, at most `side_by_side` at once, each
    answered its own outcomes; a small one still goes to the writer."""
    groups = ReportGroups(max_batch_items=1, side_by_side=2)
    lock = threading.Lock()
    running = [0]
    most = [0]
    threads: set[str] = set()

    def report_many(items: Sequence[TrialReport]) -> list[Any]:
        large = len(items) > 1
        with lock:
            running[0] += large
            most[0] = max(most[0], running[0])
            threads.add(threading.current_thread().name)
        threading.Event().wait(0.05)
        with lock:
            running[0] -= large
        return [item.trial_id * 10 + item.epoch for item in items]

    async def send() -> Any:
        large = [groups.report(report_many, [_item(t), _item(t + 1)]) for t in range(0, 12, 2)]
        return await asyncio.gather(*large, groups.report(report_many, [_item(99)]))

    answers = asyncio.run(send())
    assert answers[:6] == [[t * 10 + 1, t * 10 + 11] for t in range(0, 12, 2)]
    assert answers[6] == [991]
    assert most[0] == 2  # of the 6 large batches
    assert sum(name.startswith(REPORTS_THREAD) for name in threads) == 1


def test_concurrent_requests_are_grouped_and_stored(client: TestClient, monkeypatch: Any) -> None:
    """Over the real app, on SQLite and on PostgreSQL: 4 workers' batches sent while the
    writer is busy are written in one call; every epoch is stored and every answer is its
    own."""
    services = client.app.state.services  # type: ignore[attr-defined]
    budget = {"max_trials": 8, "parallel_trials": 8, "epochs": 5}
    assert client.post("/api/v1/studies", json=spec_doc(budget=budget)).status_code == 201
    workers = [ApiWorker(client) for _ in range(4)]
    held = [worker.lease(count=2) for worker in workers]
    reporting = services.protocol.reporting
    writer = Writer()
    real = reporting.report_many

    def report_many(items: Sequence[TrialReport]) -> Any:
        writer(items)  # records the call; the first waits for `go`
        return real(items)

    monkeypatch.setattr(reporting, "report_many", report_many)

    def post(index: int) -> Any:
        url = f"/api/v1/workers/{workers[index].id}/reports"
        return client.post(url, content=_body(held[index], 1))

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, 0)
        assert writer.started.wait(10)
        rest = [pool.submit(post, i) for i in (1, 2, 3)]
        groups = client.app.state.report_groups  # type: ignore[attr-defined]
        for _ in range(200):
            if len(groups._waiting) == 3:
                break
            threading.Event().wait(0.01)
        writer.go.set()
        replies = [first.result(10)] + [f.result(10) for f in rest]
    assert len(writer.calls) == 2 and len(writer.calls[1]) == 6
    for reply, trials in zip(replies, held, strict=True):
        assert reply.status_code == 200, reply.text
        assert [r["trial_id"] for r in reply.json()["results"]] == [t["trial_id"] for t in trials]
        assert {r["decision"] for r in reply.json()["results"]} == {"continue"}
    for trials in held:
        for trial in trials:
            curve = client.get(f"/api/v1/trials/{trial['trial_id']}").json()["curve"]
            assert [point["epoch"] for point in curve] == [1]
