"""A trial's end off the training path (trainer.finishing, trainer.worker): the background
sender of model uploads and completions, and the next trials leased while the last epoch
trains. Unit tests with a recording client; the real processes are in tests/e2e."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hpo.client import ApiError, ServerUnreachable
from hpo.protocol import (
    Assignment,
    Completion,
    Decision,
    ModelSaved,
    ReportOutcome,
    TrialReport,
    TrialState,
    WorkerRegistered,
)
from tests.support.assignments import assignment
from trainer import train as train_module
from trainer.finishing import Sender
from trainer.train import TrainResult
from trainer.worker import DeviceWorker

# -- the sender -----------------------------------------------------------------------------


def test_the_sender_runs_jobs_in_the_order_given_one_at_a_time() -> None:
    sender = Sender()
    ran: list[int] = []
    running = threading.Semaphore(1)

    def job(n: int) -> int:
        assert running.acquire(blocking=False), "two jobs at once"
        time.sleep(0.01)
        ran.append(n)
        running.release()
        return n * 10

    futures = [sender.submit(lambda n=n: job(n)) for n in range(5)]
    assert [f.result(5) for f in futures] == [0, 10, 20, 30, 40]
    assert ran == [0, 1, 2, 3, 4] and sender.busy == 0


def test_drain_waits_for_every_job_given_so_far() -> None:
    sender = Sender()
    gate = threading.Event()
    sender.submit(gate.wait)
    assert not sender.drain(timeout=0.05) and sender.busy == 1
    gate.set()
    assert sender.drain(timeout=5) and sender.busy == 0


def test_an_unreachable_server_skips_the_jobs_after_it_and_is_raised_once() -> None:
    sender = Sender()
    ran: list[str] = []

    def gone() -> None:
        ran.append("first")
        raise ServerUnreachable("http://x: connection refused")

    first = sender.submit(gone)
    second = sender.submit(lambda: ran.append("second"))
    with pytest.raises(ServerUnreachable):
        second.result(5)  # skipped: its lease expires on the server
    assert ran == ["first"] and first.exception() is not None
    with pytest.raises(ServerUnreachable):
        sender.check()
    sender.check()  # once: the worker is on its way out already


def test_another_error_of_a_job_is_its_own_and_the_sender_goes_on() -> None:
    sender = Sender()

    def broken() -> None:
        raise ValueError("a bug in one job")

    failed = sender.submit(broken)
    assert sender.submit(lambda: "next").result(5) == "next"
    assert isinstance(failed.exception(), ValueError)
    sender.check()  # nothing to raise in the worker's loop


# -- the worker ----------------------------------------------------------------------------


class FakeClient:
    """The worker protocol's calls, recorded in order as (name, trial id or detail); leases
    hand out `queue` (one list per lease request), completions answer `completion_state`."""

    server = "http://fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.queue: list[list[Assignment]] = []
        self.with_completion: list[Assignment] = []
        self.completion_state = TrialState.COMPLETED
        self.complete_gate = threading.Event()
        self.complete_gate.set()
        self.complete_error: Exception | None = None
        self.lock = threading.Lock()

    def record(self, name: str, detail: Any) -> None:
        with self.lock:
            self.calls.append((name, detail))

    def names(self, name: str) -> list[Any]:
        with self.lock:
            return [detail for n, detail in self.calls if n == name]

    def leaving(self, _seconds: float) -> None:
        pass

    def register(self, *_: Any, **__: Any) -> WorkerRegistered:
        return WorkerRegistered(worker_id=1, lease_seconds=30, heartbeat_seconds=10)

    def deregister(self, _w: int) -> None:
        self.record("deregister", None)

    def lease(
        self, _w: int, count: int = 1, held: list[int] | None = None, ahead: bool = False
    ) -> list[Assignment]:
        self.record("lease", held)
        return self.queue.pop(0) if self.queue else []

    def heartbeat(self, _w: int, leases: list[tuple[int, str]]) -> dict[int, Decision]:
        self.record("heartbeat", sorted(t for t, _ in leases))
        return {t: Decision.CONTINUE for t, _ in leases}

    def report(self, _w: int, trial_id: int, _t: str, epoch: int, _m: Any) -> Decision:
        self.record("report", (trial_id, epoch))
        return Decision.CONTINUE

    def report_many(self, _w: int, items: list[TrialReport]) -> list[ReportOutcome]:
        for item in items:
            self.record("report", (item.trial_id, item.epoch))
        return [ReportOutcome(trial_id=i.trial_id, decision="continue") for i in items]

    def save_model(self, _w: int, trial_id: int, _t: str, _blob: bytes) -> ModelSaved:
        self.record("save_model", trial_id)
        return ModelSaved(trial_id=trial_id, kept=True)

    def complete(self, _w: int, trial_id: int, _t: str, **kwargs: Any) -> Completion:
        self.complete_gate.wait(5)
        self.record("complete", (trial_id, kwargs["lease"], kwargs["held"]))
        if self.complete_error is not None:
            raise self.complete_error
        handed, self.with_completion = self.with_completion, []
        return Completion(
            state=self.completion_state, assignments=handed if kwargs["lease"] else []
        )

    def release(self, _w: int, trial_id: int, _t: str) -> None:
        self.record("release", trial_id)

    def fail(self, _w: int, trial_id: int, _t: str, reason: str) -> None:
        self.record("fail", trial_id)


def fake_train(
    epochs_seen: list[tuple[int, list[int]]] | None = None,
    during: Any = None,
) -> Any:
    """trainer.train.train without torch: reports each epoch of the assignment (recording
    which trials the worker held then) and ends with no decision, or with the first answer
    that ends training. `during(epoch)` runs before each report."""

    def train(config: Any, report: Any, checkpoint: Any = None) -> TrainResult:
        stop = config.stop_epoch or config.epochs
        for epoch in range(1, stop + 1):
            if during is not None:
                during(epoch)
            decision = report(epoch, {"val_accuracy": epoch / 10})
            if decision.ends_training():
                return TrainResult(epoch, {"val_accuracy": epoch / 10}, decision)
        return TrainResult(stop, {"val_accuracy": stop / 10}, None, {"test_accuracy": 0.5})

    return train


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    monkeypatch.setattr(train_module, "train", fake_train())
    return FakeClient()


def _worker(client: FakeClient, **kwargs: Any) -> DeviceWorker:
    worker = DeviceWorker(client, "cpu", poll_seconds=0.01, **kwargs)  # type: ignore[arg-type]
    worker.worker_id = 1
    return worker


def test_a_trial_is_leased_ahead_while_its_last_epoch_trains_and_completed_after(
    client: FakeClient,
) -> None:
    client.queue = [[assignment(2)]]  # the lease ahead's answer
    worker = _worker(client)
    upcoming = worker.run_trial(assignment(1), lease_next=True)
    assert [a.trial_id for a in upcoming] == [2]
    worker.finishing.drain(5)
    # The lease ahead left after epoch 1's report (the last epoch training), holding trial 1;
    # the completion then leased nothing more.
    calls = client.calls
    assert calls.index(("lease", [1])) < calls.index(("complete", (1, 0, None)))
    assert worker.held_ids() == []


def test_a_refused_lease_ahead_falls_back_to_the_completions_lease(client: FakeClient) -> None:
    """A study's parallel_trials counts the trial still training, so the lease ahead may
    bring nothing: the completion then leases the next trial, and the worker waits for it."""
    client.with_completion = [assignment(2)]
    worker = _worker(client)
    upcoming = worker.run_trial(assignment(1), lease_next=True)
    assert [a.trial_id for a in upcoming] == [2]
    assert client.names("lease") == [[1]]  # asked ahead, refused
    assert client.names("complete") == [(1, 1, [])]  # the fallback, holding nothing else


def test_no_lease_ahead_for_the_last_trial_a_process_takes(client: FakeClient) -> None:
    worker = _worker(client, max_trials=1)
    assert worker.run_trial(assignment(1), lease_next=worker.takes_more()) == []
    worker.finishing.drain(5)
    assert client.names("lease") == [] and client.names("complete") == [(1, 0, None)]


def test_the_lease_ahead_waits_for_the_last_epochs_expected_end(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked LEASE_AHEAD_SECONDS before the last epoch should end (as long as the one
    before): a trial leased ahead waits little; when training ends first, nothing is asked
    and the completion leases instead."""
    import trainer.worker as worker_module

    monkeypatch.setattr(worker_module, "LEASE_AHEAD_SECONDS", 0.05)
    worker = _worker(client)
    lease = worker.lease_for(assignment(1))
    worker.hold([lease])
    worker.lease_ahead(lease, epoch_seconds=0.3)
    time.sleep(0.1)
    assert client.names("lease") == []  # not yet: 0.25 s after the epoch's start
    assert worker.take_ahead() == []  # training ended early: not asked at all
    time.sleep(0.3)
    assert client.names("lease") == []
    client.queue = [[assignment(2)]]
    worker.lease_ahead(lease, epoch_seconds=0.1)
    time.sleep(0.2)
    assert client.names("lease") == [[1]]
    assert [a.trial_id for a in worker.take_ahead() or []] == [2]


def test_a_one_epoch_trial_leases_ahead_as_it_starts(client: FakeClient) -> None:
    client.queue = [[assignment(2, epochs=1)]]
    worker = _worker(client)
    upcoming = worker.run_trial(assignment(1, epochs=1), lease_next=True)
    assert [a.trial_id for a in upcoming] == [2]
    assert client.names("lease") == [[1]]


def test_the_model_upload_precedes_the_completion_on_the_sender(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _worker(client)
    monkeypatch.setattr(worker, "_model_file", lambda *_: b"model")
    worker.run_trial(assignment(1, keep_model=True))
    worker.finishing.drain(5)
    ends = [c for c in client.calls if c[0] in ("save_model", "complete")]
    assert ends == [("save_model", 1), ("complete", (1, 0, None))]


def test_a_completing_trial_stays_held_and_renewed_until_its_answer(
    client: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The next trial starts at once; the heartbeat renews the completing one's lease and the
    next one's until the completion is answered; its log line is written then."""
    client.complete_gate.clear()
    worker = _worker(client)
    with caplog.at_level("INFO", logger="hpo.worker"):
        worker.run_trial(assignment(1), lease_next=False)
        assert worker.held_ids() == [1] and "completed" not in caplog.text
        worker.hold([worker.lease_for(assignment(2))])  # the next trial, training
        beat = threading.Thread(target=worker._heartbeat_loop, daemon=True)
        worker.heartbeat_seconds = 0.01
        beat.start()
        deadline = time.monotonic() + 5
        while not client.names("heartbeat") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.names("heartbeat")[0] == [1, 2]
        client.complete_gate.set()
        worker.finishing.drain(5)
        worker.shutdown.set()
        beat.join(5)
    assert worker.held_ids() == [2]
    assert "trial #1 of 's' completed in" in caplog.text
    assert "held-out test_accuracy=0.5" in caplog.text


def test_a_lost_lease_at_the_completion_is_no_error(
    client: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.complete_error = ApiError(409, "the lease token is stale")
    worker = _worker(client)
    with caplog.at_level("INFO", logger="hpo.worker"):
        worker.run_trial(assignment(1))
        worker.finishing.drain(5)
    worker.finishing.check()  # nothing for the loop to raise
    assert worker.held_ids() == []
    assert "trial #1 of 's' lost in" in caplog.text


def test_a_server_gone_at_the_completion_ends_the_worker_from_its_loop(
    client: FakeClient,
) -> None:
    client.queue = [[assignment(1)]]
    client.complete_error = ServerUnreachable("http://fake: connection refused")
    worker = _worker(client)
    with pytest.raises(ServerUnreachable):
        worker.run()
    assert client.names("deregister") == [None]  # tried once on the way out


def test_a_worker_leaving_waits_for_its_completions_and_gives_back_what_it_leased_ahead(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the last epoch trains, after the lease ahead: the trial ends released
    at its epoch, the trial leased ahead is given back, and a completion still on its way
    is answered before the worker deregisters."""
    client.queue = [[assignment(1)], [assignment(2)], [assignment(3)]]
    worker = _worker(client)
    client.complete_gate.clear()

    def during(epoch: int) -> None:
        if worker.held_ids() == [1, 2] and epoch == 2:  # 1 completing, 2 in its last epoch
            deadline = time.monotonic() + 5
            while len(client.names("lease")) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # the lease ahead of trial 3 (after epoch 1's report)
            threading.Timer(0.1, client.complete_gate.set).start()
            worker.stop()

    monkeypatch.setattr(train_module, "train", fake_train(during=during))
    worker.run()
    released = client.names("release")
    assert client.names("complete")[0][0] == 1
    assert released == [2, 3]  # 2 at its epoch (unfinished), 3 leased ahead, not started
    calls = [name for name, _ in client.calls]
    assert calls.index("complete") < calls.index("deregister")
    assert calls[-1] == "deregister"


def test_a_trial_is_held_from_its_lease_for_so_no_lease_ahead_takes_it_for_lost(
    client: FakeClient,
) -> None:
    """A lease ahead names every trial the worker holds: one it named not would be queued
    again by the server as a lost answer (and handed out again) while it trains."""
    worker = _worker(client)
    lease = worker.lease_for(assignment(1))  # as run_trial, or a driver of its own, starts it
    worker.lease_ahead(lease)
    assert worker.take_ahead() == []
    assert client.names("lease") == [[1]]
    worker.release_held([lease])
    assert worker.held_ids() == []


def test_after_a_refused_lease_ahead_the_next_trials_are_leased_with_their_completion(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study whose parallel_trials equals its workers refuses every lease ahead: after one
    refusal the next AHEAD_BACKOFF trials do not ask (one request a trial, the completion),
    then the worker asks again."""
    import trainer.worker as worker_module

    monkeypatch.setattr(worker_module, "AHEAD_BACKOFF", 2)
    worker = _worker(client)
    for trial_id in range(1, 5):
        client.with_completion = [assignment(trial_id + 1)]
        [upcoming] = worker.run_trial(assignment(trial_id), lease_next=True)
        assert upcoming.trial_id == trial_id + 1
    assert client.names("lease") == [[1], [4]]  # trials 2 and 3 did not ask
    assert [c[1] for c in client.names("complete")] == [1, 1, 1, 1]  # each leased the next
