"""The reaping part of the worker protocol: take trials back from workers that vanished (their
lease expired) or that never heard of them (the answer carrying the lease was lost)."""

from __future__ import annotations

from collections.abc import Collection

from hpo.protocol import TrialState
from service.domain.context import ProtocolContext
from service.storage.unit import reading, unit_of_work


class Reaping:
    def __init__(self, context: ProtocolContext) -> None:
        self.context = context

    def reap(self) -> int:
        """Take back every expired lease; returns how many. Safe to run from any process.

        A trial that lost `max_attempts` workers this way fails; any other is queued again
        for another worker, one attempt later."""
        transitions, max_attempts = self.context.transitions, self.context.settings.max_attempts
        with unit_of_work(self.context.db) as unit:
            expired = unit.trials.lock_expired(self.context.clock())
            for trial in expired:
                if trial.attempt >= max_attempts:
                    reason = f"its worker vanished {trial.attempt} times (lease expired)"
                    transitions.finish(unit, trial, TrialState.FAILED, reason)
                    continue
                trial.attempt += 1
                transitions.release(unit, trial, TrialState.QUEUED)
            return len(expired)

    def before_lease(self, worker_id: int, held: Collection[int] | None) -> None:
        """What a lease does first, after one read-only look (most leases find nothing to do):
        `reap` when a lease expired, and `take_back_unheard` when `held` is given and the
        worker has a trial outside it. Each runs in its own transaction, as it would alone."""
        with reading(self.context.db) as stores:
            expired = stores.trials.any_expired(self.context.clock())
            unheard = held is not None and stores.trials.any_unheard(worker_id, held)
        if expired:
            self.reap()
        if unheard and held is not None:
            self.take_back_unheard(worker_id, held)

    def take_back_unheard(self, worker_id: int, held: Collection[int]) -> int:
        """Queue again the running trials leased to this worker other than `held`; returns how
        many. A worker asking for work while such a trial exists never heard of it: the answer
        that carried it was lost (a reset connection, a server killed after committing) and the
        worker asked again. Without this the trial would wait for its lease to expire and lose
        an attempt; nothing was trained, so no attempt is counted."""
        with unit_of_work(self.context.db) as unit:
            trials = unit.trials.lock_unheard(worker_id, held)
            for trial in trials:
                self.context.transitions.release(unit, trial, TrialState.QUEUED)
            return len(trials)
