"""The reaping part of the worker protocol: take trials back from workers that vanished (their
lease expired) or that never heard of them (the answer carrying the lease was lost), and end
the Optuna trials of leases that a server did not finish (`end_orphans`)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from hpo.protocol import TrialState
from service.domain.context import ProtocolContext
from service.storage import optuna_trials
from service.storage.unit import reading, unit_of_work

ORPHAN_REASON = (
    "orphaned: created by a lease whose server stopped before the service recorded the trial "
    "(the service sampled that trial again under another Optuna trial)"
)


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

    def end_orphans(self) -> int:
        """End FAIL every running Optuna trial of the service's studies that no trial of the
        service names, with `ORPHAN_REASON` in its system attribute `hpo:orphaned`; returns
        how many. Safe to run from any process, at any time, without a lock.

        A lease creates its Optuna trials (and writes their params) between two transactions of
        ours: the trials' rows first, their Optuna ids last. A server that stops in between
        leaves running Optuna trials that nothing would ever end; samplers see them, and so
        does `optuna.load_study`. The reads go in an order that never takes a live lease's
        trial for one: Optuna's running trials first; then, for a study with some, whether
        one of its trials waits for its Optuna trial (a lease between its ask and its last
        write, or a trial a stopped server left so, sampled again when leased next), and if
        so the study is left for a later round; else which of them its trials name. A trial
        read in the first step was created by a lease whose rows were committed before, so at
        the second step its lease either still waits (the study is skipped) or has stored its
        Optuna id (the trial is claimed at the third) or will never store one."""
        db, storage = self.context.db, self.context.storage
        with reading(db) as stores:
            studies = stores.studies.optuna_ids()
        running = optuna_trials.running_trials(storage, studies.values())
        ended = 0
        for study_id, optuna_study_id in studies.items():
            ids = running.get(optuna_study_id)
            if not ids:
                continue  # most rounds: one query, and nothing to do
            with reading(db) as stores:
                if stores.trials.any_unsampled(study_id):
                    continue
                claimed = stores.trials.claimed(study_id, ids)
            for trial_id in ids:
                if trial_id not in claimed:
                    ended += optuna_trials.end_orphan(storage, trial_id, ORPHAN_REASON)
        return ended

    def retell(self) -> int:
        """Tell Optuna again the end of every trial that finished more than a lease ago while
        its Optuna trial still runs; returns how many. Safe to run from any process.

        A trial's end is told to Optuna after our commit (with its curve, when the reports
        left it out): a server that stops in between leaves the Optuna trial running, and
        `optuna.load_study` shows it so forever. Telling it again writes what the finish
        would have (a tell of an Optuna trial that has ended meanwhile is a no-op); the lease's
        length of waiting leaves a live finish's own tell, which comes right after its commit,
        alone."""
        db, storage = self.context.db, self.context.storage
        before = self.context.clock() - timedelta(seconds=self.context.settings.lease_seconds)
        with reading(db) as stores:
            studies = stores.studies.optuna_ids()
        running = optuna_trials.running_trials(storage, studies.values())
        told = 0
        for study_id, optuna_study_id in studies.items():
            ids = running.get(optuna_study_id)
            if not ids:
                continue
            with reading(db) as stores:
                if not stores.trials.finished_naming(study_id, ids, before):
                    continue
            with unit_of_work(db) as unit:
                study = unit.studies.get(study_id)
                assert study is not None  # its trials are
                for trial in unit.trials.finished_naming(study_id, ids, before):
                    self.context.transitions.tell_optuna(unit, study, trial)
                    told += 1
        return told
