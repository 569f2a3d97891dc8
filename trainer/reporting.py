"""Reports that travel while the next epoch trains.

An epoch's checkpoint upload and report are round trips to the server: milliseconds each, more
on a busy machine. Waited for between epochs, they leave the device idle. Instead they go out
on one helper thread, in order (the checkpoint before its report), while the next epoch starts.
That epoch is speculative: when the answer ends training (prune, pause, stop) or the report
fails, it stops at its next batch and its work is thrown away, so the trial ends after the
reported epoch exactly as if the loop had waited. Only the answer to the last epoch is waited
for before the trial ends.

The reports of all the trials a worker trains at once (a fused group's members, each on its
own Reporter thread) go through one ReportBatcher: a report leaves at once when no request is
on its way; those that come ready meanwhile leave together in the next request, one batched
report, so K trials cost one round trip an epoch instead of K.

Fewer requests still (TrialReports, one per trial): when no pruner reads a trial's reports the
server says so in its lease (`report_interval` seconds above 0). An answer to a report before
the lease's last epoch can then only be continue, or pause for a stopped study, so the trial's
reports are held and sent together once `report_interval` has passed since its last sent one
(several epochs of one trial in one batched request, in epoch order); a stopped study is heard
at most one interval later and pauses the trial at the last epoch sent. An epoch whose
checkpoint was uploaded, and the lease's last epoch, are sent at once; the last epoch of a
trial's full budget travels with its completion instead (trainer.worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from hpo.client import ApiError
from hpo.protocol import Decision, ReportOutcome, TrialReport

Report = Callable[[int, dict[str, float]], Decision]
Checkpoint = Callable[[int, bytes], None]


class Superseded(Exception):
    """The epoch in progress is not wanted: the answer to the last report ended training."""


class Reporter:
    """Sends one epoch's checkpoint and report at a time, in the background."""

    def __init__(self, report: Report, checkpoint: Checkpoint | None) -> None:
        self._report = report
        self._checkpoint = checkpoint
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hpo-report")
        self._pending: Future[Decision] | None = None
        # Set once the pending report's answer ends training or the report failed: the epoch
        # training meanwhile checks it after every batch (see `check`).
        self.ended = threading.Event()

    @property
    def takes_checkpoints(self) -> bool:
        return self._checkpoint is not None

    def send(self, epoch: int, metrics: dict[str, float], checkpoint: bytes | None) -> None:
        """Start sending `epoch`'s checkpoint (if any) and report; the answer to the one before
        must have been taken with `decision`."""
        if self._pending is not None:
            raise RuntimeError("the answer to the previous report was not taken")
        self._pending = self._pool.submit(self._send, epoch, metrics, checkpoint)

    def _send(self, epoch: int, metrics: dict[str, float], blob: bytes | None) -> Decision:
        try:
            if blob is not None and self._checkpoint is not None:
                # Before the report: if the answer is `pause`, the state to resume from exists.
                self._checkpoint(epoch, blob)
            decision = Decision(self._report(epoch, metrics))
        except BaseException:
            self.ended.set()
            raise
        if decision.ends_training():
            self.ended.set()
        return decision

    def check(self) -> None:
        """Raises Superseded when the epoch in progress will be thrown away."""
        if self.ended.is_set():
            raise Superseded

    def decision(self) -> Decision | None:
        """The answer to the last report sent (waiting for it, or raising what the report
        raised); None when none is pending."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def close(self) -> None:
        """Waits for a report still on its way (a failing trial's last report lands before the
        failure), then ends the helper thread."""
        self._pool.shutdown(wait=True)


SendOne = Callable[[TrialReport], Decision]
SendMany = Callable[[list[TrialReport]], Sequence[ReportOutcome]]
Outcome = Decision | BaseException


@dataclass
class _Waiting:
    items: list[TrialReport]
    outcomes: list[Outcome] | None = None


class ReportBatcher:
    """Sends the reports of several trials from many threads, batching what is ready.

    `report` and `send` block their caller until the answers to its own reports are in, as a
    single report would. When no request is on its way the reports leave at once (a lone one
    through `send_one`, else through `send_many`, one batched request); reports made while one
    is on its way wait for it and then leave together. An item the server refused raises
    ApiError with that item's status and detail in its own caller, as the single route's
    answer would. `clock` (seconds) times the holding of each trial's reports (`trial`)."""

    def __init__(
        self, send_one: SendOne, send_many: SendMany, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self.clock = clock
        self._ready = threading.Condition()
        self._queue: list[_Waiting] = []
        self._sending = False

    def trial(self, trial_id: int, token: str, interval: float) -> TrialReports:
        """The outbox of one leased trial's reports (its lease's `report_interval`)."""
        return TrialReports(self, trial_id, token, interval)

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> Decision:
        [outcome] = self.send([_item(trial_id, token, epoch, metrics)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def send(self, items: list[TrialReport]) -> list[Outcome]:
        """Each item's answer, in order: its Decision, or the ApiError (or whatever the
        request raised) that it got."""
        mine = _Waiting(items)
        batch: list[_Waiting] = []  # what this caller sends, when nothing is on its way
        with self._ready:
            self._queue.append(mine)
            while mine.outcomes is None and self._sending:
                self._ready.wait()
            if mine.outcomes is None:  # nothing on its way: send what is queued, this included
                self._sending = True
                batch, self._queue = self._queue, []
        if batch:
            self._send(batch)
        assert mine.outcomes is not None
        return mine.outcomes

    def _send(self, batch: list[_Waiting]) -> None:
        items = [item for waiting in batch for item in waiting.items]
        outcomes: list[Outcome]
        try:
            if len(items) == 1:
                outcomes = [self._send_one(items[0])]
            else:
                answers = self._send_many(items)
                outcomes = [_outcome(answer) for answer in answers]
                if len(outcomes) != len(items):
                    raise RuntimeError(f"{len(outcomes)} answers to {len(items)} reports")
        except BaseException as exc:  # the request failed: every report in it did
            outcomes = [exc] * len(items)
        with self._ready:
            start = 0
            for waiting in batch:
                waiting.outcomes = outcomes[start : start + len(waiting.items)]
                start += len(waiting.items)
            self._sending = False
            self._ready.notify_all()


class TrialReports:
    """One leased trial's epoch reports on their way through a ReportBatcher, from one thread
    (its Reporter's): each sent at once when `interval` is 0, else held until `interval`
    seconds have passed since the trial's last sent report (or its lease) and then sent with
    the held ones, in epoch order, in one request."""

    def __init__(self, batcher: ReportBatcher, trial_id: int, token: str, interval: float):
        self._batcher = batcher
        self.trial_id, self.token, self.interval = trial_id, token, interval
        self.held: list[TrialReport] = []
        self._sent_at = batcher.clock()

    def report(self, epoch: int, metrics: dict[str, float], hold: bool = True) -> Decision:
        """The answer to this epoch's report: `continue` at once when it is held (`hold` and
        the interval not yet over), else the answer to the reports sent now (see `flush`)."""
        self.keep(epoch, metrics)
        if hold and self.interval > 0 and self._batcher.clock() - self._sent_at < self.interval:
            return Decision.CONTINUE
        return self.flush()

    def keep(self, epoch: int, metrics: dict[str, float]) -> None:
        """Hold this epoch's report whatever the interval (for the trial's completion)."""
        self.held.append(_item(self.trial_id, self.token, epoch, metrics))

    def take(self) -> list[TrialReport]:
        """The held reports, now the caller's to send (with the completion)."""
        held, self.held = self.held, []
        return held

    def flush(self) -> Decision:
        """Send the held reports in one request: the first answer that ends training, else
        `continue` (also when none was held). Raises the ApiError of a refused item (409
        stale, 404 gone) unless an earlier item's answer ended training already."""
        items = self.take()
        if not items:
            return Decision.CONTINUE
        self._sent_at = self._batcher.clock()
        for outcome in self._batcher.send(items):
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome.ends_training():
                return outcome
        return Decision.CONTINUE


def _item(trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> TrialReport:
    # Not validated here: the server checks a report and names what is wrong in its 422.
    return TrialReport.model_construct(trial_id=trial_id, token=token, epoch=epoch, metrics=metrics)


def _outcome(answer: ReportOutcome) -> Outcome:
    if answer.decision is not None and answer.status == 200:
        return answer.decision
    return ApiError(answer.status, answer.detail)
