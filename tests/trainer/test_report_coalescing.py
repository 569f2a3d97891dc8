"""A trial's reports held while their answers cannot change its course (trainer.reporting's
TrialReports, a lease's `report_interval`) and sent together; the full budget's last epoch kept
for the completion (trainer.worker). Unit tests: a hand-set clock, recording senders."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hpo.client import ApiError
from hpo.protocol import Assignment, Completion, Decision, ReportOutcome, TrialReport, TrialState
from service.api.schemas import CompleteRequest, Strict
from tests.support.assignments import assignment
from tests.support.clock import Clock
from trainer.client import WorkerClient
from trainer.reporting import ReportBatcher, TrialReports
from trainer.train import TrainResult
from trainer.worker import DeviceWorker


class Sent:
    """The batcher's two senders, recording each request's (trial, epoch) items; answers
    `continue` unless `answers` says otherwise for an epoch."""

    def __init__(self) -> None:
        self.requests: list[list[tuple[int, int]]] = []
        self.answers: dict[int, ReportOutcome] = {}

    def one(self, item: TrialReport) -> Decision:
        [outcome] = self.many([item])
        if outcome.decision is None:
            raise ApiError(outcome.status, outcome.detail)
        return outcome.decision

    def many(self, items: list[TrialReport]) -> list[ReportOutcome]:
        self.requests.append([(item.trial_id, item.epoch) for item in items])
        return [
            self.answers.get(item.epoch, ReportOutcome(trial_id=item.trial_id, decision="continue"))
            for item in items
        ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _batcher(sent: Sent, clock: Clock) -> ReportBatcher:
    return ReportBatcher(sent.one, sent.many, clock=lambda: clock().timestamp())


def _report(reports: TrialReports, epoch: int, hold: bool = True) -> Decision:
    return reports.report(epoch, {"val_accuracy": epoch / 10}, hold=hold)


def test_a_lone_trial_with_interval_0_sends_each_report_at_once(clock: Clock) -> None:
    sent = Sent()
    reports = _batcher(sent, clock).trial(7, "t", interval=0.0)
    assert _report(reports, 1) is Decision.CONTINUE
    assert sent.requests == [[(7, 1)]]
    assert _report(reports, 2) is Decision.CONTINUE
    assert sent.requests == [[(7, 1)], [(7, 2)]]


def test_reports_are_held_until_the_interval_has_passed_then_sent_together(
    clock: Clock,
) -> None:
    sent = Sent()
    reports = _batcher(sent, clock).trial(7, "t", interval=1.0)
    for epoch in (1, 2):  # 0.4 s and 0.8 s after the lease: held
        clock.advance(0.4)
        assert _report(reports, epoch) is Decision.CONTINUE
    assert sent.requests == []
    clock.advance(0.4)  # 1.2 s since the lease
    assert _report(reports, 3) is Decision.CONTINUE
    assert sent.requests == [[(7, 1), (7, 2), (7, 3)]]  # one request, in epoch order
    clock.advance(0.9)  # the interval counts from that request
    assert _report(reports, 4) is Decision.CONTINUE
    assert sent.requests == [[(7, 1), (7, 2), (7, 3)]]
    clock.advance(0.1)
    _report(reports, 5)
    assert sent.requests[-1] == [(7, 4), (7, 5)]


def test_a_report_that_may_not_be_held_takes_the_held_ones_along(clock: Clock) -> None:
    sent = Sent()
    reports = _batcher(sent, clock).trial(7, "t", interval=1.0)
    _report(reports, 1)
    _report(reports, 2, hold=False)  # e.g. its checkpoint was uploaded, or the lease's last
    assert sent.requests == [[(7, 1), (7, 2)]]


def test_the_answer_to_held_reports_is_the_first_that_ends_training(clock: Clock) -> None:
    sent = Sent()
    sent.answers[2] = ReportOutcome(trial_id=7, decision="pause")
    sent.answers[3] = ReportOutcome(trial_id=7, status=409, detail="stale")
    reports = _batcher(sent, clock).trial(7, "t", interval=1.0)
    _report(reports, 1)
    _report(reports, 2)
    assert _report(reports, 3, hold=False) is Decision.PAUSE
    assert reports.held == []


def test_a_refused_report_raises_its_status(clock: Clock) -> None:
    sent = Sent()
    sent.answers[2] = ReportOutcome(trial_id=7, status=409, detail="lease token is stale")
    reports = _batcher(sent, clock).trial(7, "t", interval=1.0)
    _report(reports, 1)
    with pytest.raises(ApiError) as raised:
        _report(reports, 2, hold=False)
    assert raised.value.status == 409


def test_kept_reports_are_the_completions(clock: Clock) -> None:
    sent = Sent()
    reports = _batcher(sent, clock).trial(7, "t", interval=1.0)
    _report(reports, 1)
    reports.keep(2, {"val_accuracy": 0.2})
    taken = reports.take()
    assert [(r.epoch, r.metrics) for r in taken] == [
        (1, {"val_accuracy": 0.1}),
        (2, {"val_accuracy": 0.2}),
    ]
    assert reports.held == [] and reports.flush() is Decision.CONTINUE
    assert sent.requests == []


# -- the worker: which epochs it holds, and the completion that carries the last ones -------


class FakeClient:
    """The WorkerClient calls a worker makes while training, recorded."""

    def __init__(self) -> None:
        self.sent = Sent()
        self.completions: list[dict[str, Any]] = []
        self.checkpoints: list[int] = []
        self.completion_state = TrialState.COMPLETED

    def report(self, _w: int, trial_id: int, token: str, epoch: int, metrics: Any) -> Decision:
        item = TrialReport(trial_id=trial_id, token=token, epoch=epoch, metrics=metrics)
        return self.sent.one(item)

    def report_many(self, _w: int, items: list[TrialReport]) -> list[ReportOutcome]:
        return self.sent.many(items)

    def save_checkpoint(self, _w: int, _t: int, _tok: str, epoch: int, _blob: bytes) -> None:
        self.checkpoints.append(epoch)

    def complete(self, _w: int, trial_id: int, token: str, **kwargs: Any) -> Completion:
        self.completions.append({"trial_id": trial_id, **kwargs})
        return Completion(state=self.completion_state)


def _assignment(epochs: int = 5, target: int | None = None, **extra: Any) -> Assignment:
    """Trial 7 (token `t`), `epochs` long, trained up to `target`."""
    return assignment(7, epochs, token="t", number=0, target_epochs=target, **extra)


def _worker(clock: Clock) -> tuple[DeviceWorker, FakeClient]:
    client = FakeClient()
    worker = DeviceWorker(client, "cpu")  # type: ignore[arg-type]
    worker.reports.clock = lambda: clock().timestamp()
    return worker, client


def _epoch(worker: DeviceWorker, lease: Any, epoch: int) -> Decision:
    return worker.report_epoch(lease, epoch, {"val_accuracy": epoch / 10})


def test_the_worker_sends_the_last_epoch_with_the_completion(clock: Clock) -> None:
    worker, client = _worker(clock)
    assignment = _assignment(report_interval=1.0)
    lease = worker.lease_for(assignment)
    for epoch in range(1, 6):  # 0.3 s an epoch
        clock.advance(0.3)
        assert _epoch(worker, lease, epoch) is Decision.CONTINUE
    # Epochs 1-3 (0.9 s after the lease) are held, 4 (1.2 s) takes them along, 5 is the
    # completion's.
    assert client.sent.requests == [[(7, 1), (7, 2), (7, 3), (7, 4)]]
    result = TrainResult(5, {"val_accuracy": 0.5}, None)
    worker.answer(worker.finish(assignment, lease, "trial", result, 0.0, False))
    [completion] = client.completions
    assert [(r.epoch, r.metrics) for r in completion["reports"]] == [(5, {"val_accuracy": 0.5})]


def test_with_interval_0_only_the_last_epoch_rides_with_the_completion(clock: Clock) -> None:
    worker, client = _worker(clock)
    assignment = _assignment(epochs=3)  # a server older than report_interval: 0
    lease = worker.lease_for(assignment)
    for epoch in (1, 2, 3):
        _epoch(worker, lease, epoch)
    assert client.sent.requests == [[(7, 1)], [(7, 2)]]
    worker.answer(worker.finish(assignment, lease, "trial", TrainResult(3, {}, None), 0.0, False))
    assert [r.epoch for r in client.completions[0]["reports"]] == [3]


def test_a_checkpointed_epoch_and_a_rungs_end_are_sent_at_once(clock: Clock) -> None:
    worker, client = _worker(clock)
    lease = worker.lease_for(_assignment(epochs=9, target=3, report_interval=60.0))
    _epoch(worker, lease, 1)
    worker.upload_checkpoint(lease, 2, b"state")
    _epoch(worker, lease, 2)  # a checkpoint is never ahead of the recorded curve
    assert client.checkpoints == [2] and client.sent.requests == [[(7, 1), (7, 2)]]
    _epoch(worker, lease, 3)  # the rung's end: its answer (pause) is waited for
    assert client.sent.requests[-1] == [(7, 3)]


def test_a_trial_whose_model_is_uploaded_has_its_last_report_answered_first(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server keeps a model file by the trial's last value: in a study that keeps models
    the last report leaves at once, with the held ones (answered while the trainer scores the
    model on the test split), the upload follows, and the completion carries none."""
    worker, client = _worker(clock)
    uploads: list[int] = []
    monkeypatch.setattr(worker, "_model_file", lambda *_: b"model")
    monkeypatch.setattr(
        worker, "_upload_model", lambda *_: uploads.append(len(client.sent.requests))
    )
    assignment = _assignment(epochs=2, report_interval=60.0, keep_model=True)
    lease = worker.lease_for(assignment)
    _epoch(worker, lease, 1)
    assert client.sent.requests == []
    _epoch(worker, lease, 2)
    assert client.sent.requests == [[(7, 1), (7, 2)]]
    trained = TrainResult(2, {}, None, run=object())  # type: ignore[arg-type]
    worker.answer(worker.finish(assignment, lease, "trial", trained, 0.0, False))
    assert uploads == [1] and client.completions[0]["reports"] == []


def test_a_prune_of_the_last_report_before_an_upload_is_the_trials_answer(clock: Clock) -> None:
    worker, client = _worker(clock)
    client.sent.answers[2] = ReportOutcome(trial_id=7, decision="prune")
    lease = worker.lease_for(_assignment(epochs=2, report_interval=60.0, keep_model=True))
    _epoch(worker, lease, 1)
    assert _epoch(worker, lease, 2) is Decision.PRUNE  # the trainer ends the trial there


def test_a_worker_shutting_down_holds_nothing(clock: Clock) -> None:
    worker, client = _worker(clock)
    lease = worker.lease_for(_assignment(epochs=5, report_interval=60.0))
    _epoch(worker, lease, 1)
    worker.shutdown.set()
    assert _epoch(worker, lease, 2) is Decision.STOP  # released after this epoch
    assert client.sent.requests == [[(7, 1), (7, 2)]]


def test_a_pause_heard_with_the_completion_is_logged_not_completed(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    worker, client = _worker(clock)
    client.completion_state = TrialState.PAUSED
    assignment = _assignment(epochs=1, report_interval=1.0)
    lease = worker.lease_for(assignment)
    _epoch(worker, lease, 1)
    with caplog.at_level("INFO", logger="hpo.worker"):
        done = worker.finish(assignment, lease, "trial #0", TrainResult(1, {}, None), 0.0, False)
        worker.answer(done)  # the line is written when the completion's answer is in
    assert "trial #0 paused in" in caplog.text


# -- a server older than a completion's reports ----------------------------------------------


class OldCompleteRequest(Strict):
    """The completion body of a server older than the reports a completion carries."""

    token: str
    lease: int = 0
    held: list[int] | None = None


def _old_server(decisions: dict[int, str]) -> tuple[WorkerClient, list[Any]]:
    """A server whose completion refuses `reports` (422 naming it); its report route answers
    `decisions` by epoch (else continue). The calls it got, in order."""
    old = FastAPI()
    calls: list[Any] = []

    @old.post("/api/v1/workers/{worker_id}/trials/{trial_id}/report")
    def report(worker_id: int, trial_id: int, body: dict[str, Any]) -> dict[str, Any]:
        calls.append(("report", body["epoch"]))
        return {"decision": decisions.get(body["epoch"], "continue")}

    @old.post("/api/v1/workers/{worker_id}/trials/{trial_id}/complete")
    def complete(worker_id: int, trial_id: int, body: OldCompleteRequest) -> dict[str, Any]:
        calls.append(("complete", body.model_dump()))
        return {"state": "completed", "assignments": []}

    client = WorkerClient("http://testserver", retry_seconds=0)
    client._http = TestClient(old)
    return client, calls


def _final(*epochs: int) -> list[TrialReport]:
    return [
        TrialReport(trial_id=2, token="t", epoch=e, metrics={"val_accuracy": 0.5}) for e in epochs
    ]


def test_a_server_older_than_a_completions_reports_hears_them_reported_first() -> None:
    client, calls = _old_server({})
    done = client.complete(1, 2, "t", reports=_final(4, 5))
    assert done.state is TrialState.COMPLETED
    assert calls == [
        ("report", 4),
        ("report", 5),
        ("complete", {"token": "t", "lease": 0, "held": None}),
    ]


def test_an_older_servers_prune_of_the_last_report_is_the_completions_state() -> None:
    client, calls = _old_server({5: "prune"})
    done = client.complete(1, 2, "t", reports=_final(5))
    assert done.state is TrialState.PRUNED
    assert calls == [("report", 5)]  # not completed


def test_a_bad_report_with_the_completion_is_not_taken_for_an_older_server() -> None:
    """A server that knows the field and refuses one item's value (422 naming
    `reports.0.epoch`) is not an older server: the error is raised, nothing reported alone."""
    new = FastAPI()
    calls: list[str] = []

    @new.post("/api/v1/workers/{worker_id}/trials/{trial_id}/report")
    def report(worker_id: int, trial_id: int, body: dict[str, Any]) -> dict[str, Any]:
        calls.append("report")
        return {"decision": "continue"}

    @new.post("/api/v1/workers/{worker_id}/trials/{trial_id}/complete")
    def complete(worker_id: int, trial_id: int, body: CompleteRequest) -> dict[str, Any]:
        calls.append("complete")
        return {"state": "completed", "assignments": []}

    client = WorkerClient("http://testserver", retry_seconds=0)
    client._http = TestClient(new)
    bad = TrialReport.model_construct(trial_id=2, token="t", epoch=0, metrics={})
    with pytest.raises(ApiError) as raised:
        client.complete(1, 2, "t", reports=[bad])
    assert raised.value.status == 422 and raised.value.field == "reports.0.epoch"
    assert calls == []


class OldLeaseRequest(Strict):
    """The lease body of a server older than the lease ahead."""

    count: int = 1
    held: list[int] | None = None


def test_a_server_older_than_the_lease_ahead_is_asked_once() -> None:
    """A server that refuses `ahead` (422 naming it) gets no lease ahead again: the worker's
    completion leases its next trials, as it did before the lease ahead."""
    old = FastAPI()
    calls: list[dict[str, Any]] = []

    @old.post("/api/v1/workers/{worker_id}/lease")
    def lease(worker_id: int, body: OldLeaseRequest) -> dict[str, Any]:
        calls.append(body.model_dump())
        return {"assignments": []}

    client = WorkerClient("http://testserver", retry_seconds=0)
    client._http = TestClient(old)
    assert client.lease(1, count=2, held=[7], ahead=True) == []
    assert client.lease(1, count=2, held=[7], ahead=True) == []  # not asked again
    assert client.lease(1, count=2, held=[]) == []  # an ordinary lease still is
    assert calls == [{"count": 2, "held": []}]
