"""The worker's ReportBatcher against a real `hpo server`: a lone report leaves at once through
the single route; reports made while one is on its way leave together in one batched request,
each caller hearing its own trial's answer (a stale token: that caller's 409 only)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hpo.client import ApiError
from hpo.protocol import Decision, TrialReport
from tests.conftest import spec_doc
from tests.support.processes import Processes
from trainer.client import WorkerClient
from trainer.reporting import ReportBatcher

TRIALS = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Processes(tmp_path_factory.mktemp("batcher")) as processes:
        yield processes.server()


def _setup(url: str, name: str) -> tuple[WorkerClient, int, list[Any]]:
    client = WorkerClient(url)
    doc = spec_doc(name, budget={"max_trials": TRIALS, "parallel_trials": TRIALS, "epochs": 3})
    client.call("POST", "/api/v1/studies", body=doc)
    worker_id = client.register("w", "h", 1, "cpu", {}).worker_id
    return client, worker_id, client.lease(worker_id, count=TRIALS)


class Counting:
    """The batcher's two senders over a real client, counting requests; the first single
    report is held back `hold` seconds so that the others come ready while it is on its way."""

    def __init__(self, client: WorkerClient, worker_id: int, hold: float = 0.0) -> None:
        self.client, self.worker_id, self.hold = client, worker_id, hold
        self.singles: list[int] = []
        self.batches: list[list[int]] = []

    def one(self, item: TrialReport) -> Decision:
        self.singles.append(item.trial_id)
        if len(self.singles) == 1:
            time.sleep(self.hold)
        return self.client.report(
            self.worker_id, item.trial_id, item.token, item.epoch, item.metrics
        )

    def many(self, items: list[TrialReport]) -> Any:
        self.batches.append([item.trial_id for item in items])
        return self.client.report_many(self.worker_id, items)


def _curve(client: WorkerClient, trial_id: int) -> list[Any]:
    curve: list[Any] = client.call("GET", f"/api/v1/trials/{trial_id}")["curve"]
    return curve


def test_a_lone_report_leaves_at_once_through_the_single_route(server: str) -> None:
    client, worker_id, [first, *_] = _setup(server, "lone")
    sender = Counting(client, worker_id)
    batcher = ReportBatcher(sender.one, sender.many)
    started = time.monotonic()
    decision = batcher.report(first.trial_id, first.token, 1, {"val_accuracy": 0.5})
    assert decision is Decision.CONTINUE and time.monotonic() - started < 5
    assert sender.singles == [first.trial_id] and sender.batches == []
    assert _curve(client, first.trial_id) == [{"epoch": 1, "metrics": {"val_accuracy": 0.5}}]


def test_reports_made_meanwhile_leave_in_one_batch_and_each_hears_its_own(server: str) -> None:
    client, worker_id, trials = _setup(server, "together")
    sender = Counting(client, worker_id, hold=1.0)
    batcher = ReportBatcher(sender.one, sender.many)
    stale = trials[-1].model_copy(update={"token": "not-the-token"})
    answers: dict[int, Any] = {}

    def report(lease: Any, value: float) -> None:
        try:
            answers[lease.trial_id] = batcher.report(
                lease.trial_id, lease.token, 1, {"val_accuracy": value}
            )
        except ApiError as exc:
            answers[lease.trial_id] = exc

    threads = [threading.Thread(target=report, args=(trials[0], 0.1))]
    threads[0].start()
    while not sender.singles:  # the first report is on its way (held back)
        time.sleep(0.01)
    for n, lease in enumerate([*trials[1:-1], stale], start=2):
        threads.append(threading.Thread(target=report, args=(lease, n / 10)))
        threads[-1].start()
    for thread in threads:
        thread.join(30)

    assert sender.singles == [trials[0].trial_id]
    assert [sorted(batch) for batch in sender.batches] == [sorted(t.trial_id for t in trials[1:])]
    for n, lease in enumerate(trials[:-1], start=1):
        assert answers[lease.trial_id] is Decision.CONTINUE
        assert _curve(client, lease.trial_id) == [{"epoch": 1, "metrics": {"val_accuracy": n / 10}}]
    refused = answers[stale.trial_id]
    assert isinstance(refused, ApiError) and refused.status == 409
    assert "stale" in str(refused.detail)
    assert _curve(client, stale.trial_id) == []
