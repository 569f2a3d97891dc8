"""A trial's end off the training path: its model upload and completion sent in the background.

When a trial (or each member of a fused group) has trained its last epoch, what is left to say
to the server (the model file's upload, then the completion with its last reports) takes a few
round trips: tens of milliseconds, more on a busy machine, during which the device would sit
idle. The worker hands those calls to one `Sender` thread instead and starts its next trial at
once. One thread, first in first out: a trial's upload precedes its completion, and trials end
in the order they finished. The worker keeps each such trial's lease in the set its heartbeat
renews until the completion's answer arrives (trainer.worker), so nothing expires meanwhile; a
worker killed before the answer loses only a re-lease (the server reaps the lease and the trial
is trained again), never a result recorded twice: the completion is idempotent on the server.

A call that fails because the server is unreachable (after the connection's retry window) is
kept: every job after it is skipped (their leases expire on the server, the trials are handed
out again), and the worker's main loop raises it at its next `check`, so the worker leaves as it
would have had the call been made on its own thread. A job's other errors (a stale lease, a
refused call) are its own: the job handles them, and the sender goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from hpo.client import ServerUnreachable

log = logging.getLogger("hpo.worker")
T = TypeVar("T")


class Sender:
    """Runs the jobs given to `submit` one at a time, in order, on one background thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hpo-finish")
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        # The server was unreachable: every later job is skipped; `check` raises it once.
        self._failure: ServerUnreachable | None = None
        self._raised = False

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue `job` after every job submitted before it; its future gives its result, or
        raises what it raised (or the sender's earlier failure: the job was skipped)."""
        future = self._pool.submit(self._run, job)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _run(self, job: Callable[[], T]) -> T:
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure  # the server is gone: the lease expires there all the same
        try:
            return job()
        except ServerUnreachable as exc:
            with self._lock:
                self._failure = self._failure or exc
            raise
        except BaseException as exc:  # a job's bug: its trial's lease expires on the server
            log.exception("ending a trial failed: %s", exc)
            raise

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    @property
    def busy(self) -> int:
        """How many jobs are queued or running."""
        with self._lock:
            return len(self._pending)

    def check(self) -> None:
        """Raise the ServerUnreachable that stopped the sender, if any (once)."""
        with self._lock:
            failure = None if self._raised else self._failure
            self._raised = self._raised or failure is not None
        if failure is not None:
            raise failure

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has ended; whether they all did in time."""
        with self._lock:
            pending = set(self._pending)
        _done, not_done = wait(pending, timeout)
        return not not_done

    def close(self) -> None:
        """Wait for every job, then end the thread."""
        self._pool.shutdown(wait=True)
