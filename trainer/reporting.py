"""Reports that travel while the next epoch trains.

An epoch's checkpoint upload and report are round trips to the server: milliseconds each, more
on a busy machine. Waited for between epochs, they leave the device idle. Instead they go out
on one helper thread, in order (the checkpoint before its report), while the next epoch starts.
That epoch is speculative: when the answer ends training (prune, pause, stop) or the report
fails, it stops at its next batch and its work is thrown away, so the trial ends after the
reported epoch exactly as if the loop had waited. Only the answer to the last epoch is waited
for before the trial ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from hpo.protocol import Decision

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
