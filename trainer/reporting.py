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
"""

from __future__ import annotations

import threading
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


@dataclass
class _Waiting:
    item: TrialReport
    outcome: Decision | BaseException | None = None


class ReportBatcher:
    """Sends the reports of several trials from many threads, batching what is ready.

    `report` blocks its caller until the answer to its own report is in, as a single report
    would. When no request is on its way the report leaves at once (alone, through `send_one`);
    reports made while one is on its way wait for it and then leave together (through
    `send_many`, one batched request). An item the server refused raises ApiError with that
    item's status and detail in its own caller, as the single route's answer would."""

    def __init__(self, send_one: SendOne, send_many: SendMany) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._ready = threading.Condition()
        self._queue: list[_Waiting] = []
        self._sending = False

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> Decision:
        # Not validated here: the server checks a report and names what is wrong in its 422.
        item = TrialReport.model_construct(
            trial_id=trial_id, token=token, epoch=epoch, metrics=metrics
        )
        mine = _Waiting(item)
        batch: list[_Waiting] = []  # what this caller sends, when nothing is on its way
        with self._ready:
            self._queue.append(mine)
            while mine.outcome is None and self._sending:
                self._ready.wait()
            if mine.outcome is None:  # nothing on its way: send what is queued, this included
                self._sending = True
                batch, self._queue = self._queue, []
        if batch:
            self._send(batch)
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        assert mine.outcome is not None
        return mine.outcome

    def _send(self, batch: list[_Waiting]) -> None:
        outcomes: list[Decision | BaseException]
        try:
            if len(batch) == 1:
                outcomes = [self._send_one(batch[0].item)]
            else:
                answers = self._send_many([waiting.item for waiting in batch])
                outcomes = [_outcome(answer) for answer in answers]
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"{len(outcomes)} answers to {len(batch)} reports")
        except BaseException as exc:  # the request failed: every report in it did
            outcomes = [exc] * len(batch)
        with self._ready:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome
            self._sending = False
            self._ready.notify_all()


def _outcome(answer: ReportOutcome) -> Decision | BaseException:
    if answer.decision is not None and answer.status == 200:
        return answer.decision
    return ApiError(answer.status, answer.detail)
