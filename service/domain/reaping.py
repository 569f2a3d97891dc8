"""The reaping part of the worker protocol: take trials back from workers that vanished (their
lease expired) or that never heard of them (the answer carrying the lease was lost), and end
what a stopped server left running in Optuna (`tidy_optuna`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
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

    def tidy_optuna(self) -> Tidied:
        """End what a stopped server left running in Optuna; safe to run from any process, at
        any time, without a lock. One read of the running Optuna trials of the service's
        studies, then one read transaction for each study that has some (most rounds find
        nothing to do there).

        Orphans: a lease creates its Optuna trials (and writes their params) between two
        transactions of ours, the trials' rows first, their Optuna ids last. A server that
        stops in between leaves running Optuna trials that nothing would ever end; samplers
        see them, and so does `optuna.load_study`. They are ended `FAIL`, with `ORPHAN_REASON`
        in their system attribute `hpo:orphaned`. The reads go in an order that never takes a
        live lease's trial for one: Optuna's running trials first; then, for a study with
        some, whether one of its trials waits for its Optuna trial (a lease between its ask
        and its last write, or a trial a stopped server left so, sampled again when leased
        next), and if so its orphans are left for a later round; else which of them its trials
        name. A trial read in the first step was created by a lease whose rows were committed
        before, so at the second its lease either still waits (the study is skipped) or has
        stored its Optuna id (the trial is claimed) or will never store one.

        Lost tells: a trial's end is told to Optuna after our commit (with its curve, when the
        reports left it out), so a server that stops in between leaves the Optuna trial
        running. A trial that finished more than a lease ago while its Optuna trial runs is
        told again what the finish would have told (a tell of an Optuna trial that has ended
        is a no-op); the lease's length of waiting leaves a live finish's own tell, which comes
        right after its commit, alone."""
        db, storage = self.context.db, self.context.storage
        before = self.context.clock() - timedelta(seconds=self.context.settings.lease_seconds)
        with reading(db) as stores:
            studies = stores.studies.optuna_ids()
        running = optuna_trials.running_trials(storage, studies.values())
        tidied = Tidied()
        for study_id, optuna_study_id in studies.items():
            ids = running.get(optuna_study_id)
            if not ids:
                continue
            with reading(db) as stores:
                waiting = stores.trials.any_unsampled(study_id)
                naming = stores.trials.naming(study_id, ids, before)
            if not waiting:
                claimed = {t.optuna_trial_id for t in naming}
                for trial_id in ids:
                    if trial_id not in claimed:
                        tidied.ended += optuna_trials.end_orphan(storage, trial_id, ORPHAN_REASON)
            untold = [t.id for t in naming if t.finished_before]
            if untold:
                tidied.told += self._tell_again(study_id, untold)
        return tidied

    def _tell_again(self, study_id: int, trial_ids: list[int]) -> int:
        """Tell Optuna the end of these finished trials of the study again."""
        with unit_of_work(self.context.db) as unit:
            study = unit.studies.get(study_id)
            assert study is not None  # its trials are
            for trial in unit.trials.of_ids(trial_ids):
                self.context.transitions.tell_optuna(unit, study, trial)
        return len(trial_ids)


@dataclass
class Tidied:
    """What `Reaping.tidy_optuna` did: orphaned Optuna trials `ended`, finished trials whose
    end Optuna was `told` again."""

    ended: int = 0
    told: int = 0
