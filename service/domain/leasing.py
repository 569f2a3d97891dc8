"""The leasing part of the worker protocol: workers register and leave, lease trials and prove
they are alive with heartbeats.

A lease is a trial row's (token, expiry). New trials are reserved under the study's row lock,
so `max_trials`, `parallel_trials` and grid points can never be handed out twice, however many
workers ask at once (the stores take the locks, in the order `service.storage.locks` keeps).
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hpo.protocol import Decision, TrialState, WorkerState
from service.domain import search
from service.domain.context import ProtocolContext
from service.domain.errors import NotFound
from service.domain.fidelity import locate
from service.domain.lease_checks import decision_for_finished, holds
from service.domain.reaping import Reaping
from service.domain.spec import StudySpec
from service.domain.transitions import target_epochs
from service.domain.workers import can_run, is_stale
from service.storage.models import StudyRow, TrialRow, WorkerRow
from service.storage.unit import Stores, Unit, reading, unit_of_work

_NEVER = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class LeasedTrial:
    """One leased trial, with everything a worker needs to train it."""

    trial: TrialRow
    study: StudyRow
    spec: StudySpec
    start_epoch: int  # epochs already trained (the checkpoint to resume from), 0 for a new one
    target_epochs: int  # train up to this epoch: the end of the trial's rung, or budget.epochs


@dataclass(frozen=True)
class _Reserved:
    """A new trial reserved in the lease's transaction, whose params are sampled after it."""

    trial_id: int
    number: int
    study_name: str
    optuna_study_id: int
    spec: StudySpec


@dataclass
class _Pool:
    """What one lease's transaction takes trials from: the running studies, locked, and the
    trials running per study, counted once and kept up to date as trials are handed out. A
    study without a queued trial stays without one until the commit (queuing a trial takes
    the study's row lock, which this transaction holds)."""

    studies: list[StudyRow]
    running: dict[int, int]
    drained: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _Handed:
    """A trial handed out by a lease; `sample`: its params are still to be sampled."""

    trial: TrialRow
    study: StudyRow
    spec: StudySpec
    sample: bool


@dataclass
class _Shares:
    """What one multi-trial lease (a fusing worker's) may take of each study: a fair share of
    the trials the study can have in flight, `min(parallel_trials, running + queued + not yet
    created)`, divided among the active workers able to run it, so that one worker asking for
    a group does not take every trial while the others idle. At least 1."""

    stale_after: timedelta
    now: datetime
    shares: dict[int, int] = field(default_factory=dict)
    taken: Counter[int] = field(default_factory=Counter)

    def allows(self, unit: Unit, study: StudyRow, spec: StudySpec) -> bool:
        if study.id not in self.shares:
            counts = unit.trials.count_by_state(study.id)
            open_trials = (
                counts.get(TrialState.RUNNING, 0)
                + counts.get(TrialState.QUEUED, 0)
                + max(0, study.max_trials - study.n_trials)
            )
            workers = sum(
                1
                for w in unit.workers.in_state(WorkerState.ACTIVE)
                if not is_stale(w.state, w.last_seen_at, self.now, self.stale_after)
                and can_run(w.capabilities, spec)
            )
            in_flight = min(study.parallel_trials, open_trials)
            self.shares[study.id] = max(1, math.ceil(in_flight / max(1, workers)))
        return self.taken[study.id] < self.shares[study.id]


def by_need(studies: list[StudyRow], running: dict[int, int]) -> list[StudyRow]:
    """The fairness policy: the study with fewest running trials first, then the one served
    longest ago, then the oldest; so several studies share the workers."""
    return sorted(studies, key=lambda s: (running.get(s.id, 0), s.last_leased_at or _NEVER, s.id))


class Leasing:
    def __init__(self, context: ProtocolContext, reaping: Reaping) -> None:
        self.context = context
        self.reaping = reaping

    # -- workers ----------------------------------------------------------------------------

    def register(
        self, name: str, host: str, pid: int | None, device: str, capabilities: dict[str, Any]
    ) -> WorkerRow:
        with unit_of_work(self.context.db) as unit:
            return unit.workers.create(name, host, pid, device, capabilities, self.context.clock())

    def list_workers(self) -> list[tuple[WorkerRow, list[TrialRow]]]:
        """Every registered worker with the trials it is running."""
        with reading(self.context.db) as stores:
            workers = stores.workers.all()
            running = stores.trials.running_by_worker()
        return [(w, running.get(w.id, [])) for w in workers]

    def deregister(self, worker_id: int) -> None:
        with unit_of_work(self.context.db) as unit:
            worker = _worker(unit, worker_id)
            worker.state = WorkerState.GONE
            worker.last_seen_at = self.context.clock()

    # -- leasing ----------------------------------------------------------------------------

    def lease(
        self,
        worker_id: int,
        count: int = 1,
        held: Collection[int] | None = None,
        ahead: bool = False,
    ) -> list[LeasedTrial]:
        """Give the worker up to `count` trials: re-leases of queued trials first, then new ones,
        spreading work over running studies (see `by_need`).

        `held`, when given, lists the trials the worker is training now: any other trial leased
        to it is one whose answer never reached it, and is queued again first (see
        `Reaping.take_back_unheard`). A request for several trials takes at most a fair share
        of each study (see `_Shares`).

        `ahead`: the worker still trains and leases its next trials before it is done. Such a
        lease never takes a study's last `parallel_trials` slot: that stays for an idle
        worker, which would otherwise wait while a busy one holds the slot it cannot use yet
        (with as many workers as parallel_trials, the first to lease ahead would take them
        all, one after the other)."""
        # In transactions of their own: reaping locks studies that may not run.
        self.reaping.before_lease(worker_id, held)
        with unit_of_work(self.context.db) as unit:
            now = self.context.clock()
            worker = _worker(unit, worker_id)
            worker.last_seen_at, worker.state = now, WorkerState.ACTIVE
            # The lock every lease's reservation takes; held until the commit.
            pool = _Pool(unit.studies.lock_running(), unit.trials.running_per_study())
            stale_after = timedelta(seconds=self.context.settings.stale_worker_seconds)
            shares = _Shares(stale_after, now) if count > 1 else None
            handed: list[_Handed] = []
            for _ in range(count):
                got = self._take_one(unit, worker, now, pool, shares, int(ahead))
                if got is None:
                    break
                handed.append(got)
            unit.flush()  # the new trials in one INSERT, for their ids
            for item in handed:
                unit.event(
                    item.trial.study_id,
                    "trial_started",
                    item.trial.id,
                    number=item.trial.number,
                    worker=worker.name,
                    attempt=item.trial.attempt,
                )
            reserved = [self._reserved(h.study, h.trial, h.spec) for h in handed if h.sample]
            taken = [h.trial.id for h in handed]
        return self._assignments(taken, self._ask(reserved))

    def _take_one(
        self,
        unit: Unit,
        worker: WorkerRow,
        now: datetime,
        pool: _Pool,
        shares: _Shares | None = None,
        spare: int = 0,
    ) -> _Handed | None:
        """One trial for the worker from the neediest study that has one it can run (and, in a
        multi-trial lease, whose fair share it has not taken yet): a queued trial again, else a
        new one; None when no study has work for it. `spare`: parallel slots of each study
        that this lease leaves free."""
        for study in by_need(pool.studies, pool.running):
            spec = search.stored_spec(study.spec)
            if not can_run(worker.capabilities, spec):
                continue
            if pool.running.get(study.id, 0) + spare >= study.parallel_trials:
                continue
            if shares is not None and not shares.allows(unit, study, spec):
                continue
            queued = None if study.id in pool.drained else unit.trials.take_queued(study.id)
            if queued is None:
                pool.drained.add(study.id)
            if shares is not None and (queued is not None or study.n_trials < study.max_trials):
                shares.taken[study.id] += 1
            if queued is not None:
                self.context.transitions.restart(unit, queued, spec.objective.metric)
                self._hand_out(pool, study, queued, worker, now)
                # No params: the server died between reserving it and sampling its params (the
                # lease's answer was lost too), so it is sampled now, like a new trial.
                return _Handed(queued, study, spec, sample=queued.params is None)
            if study.n_trials < study.max_trials:
                trial = self._reserve(unit, study, spec)
                self._hand_out(pool, study, trial, worker, now)
                return _Handed(trial, study, spec, sample=True)
        return None

    @staticmethod
    def _reserved(study: StudyRow, trial: TrialRow, spec: StudySpec) -> _Reserved:
        assert study.optuna_study_id is not None
        return _Reserved(trial.id, trial.number, study.name, study.optuna_study_id, spec)

    @staticmethod
    def _reserve(unit: Unit, study: StudyRow, spec: StudySpec) -> TrialRow:
        """Create the study's next trial (its number is the study's trial count), in its
        bracket's first rung for successive halving and Hyperband."""
        number = study.n_trials
        bracket, rung, target = 0, 0, None
        if spec.strategy.is_multi_fidelity:
            brackets = spec.brackets()
            bracket = locate(brackets, number)
            target = brackets[bracket].rungs[0].epochs
        study.n_trials += 1
        return unit.trials.create(study.id, number, bracket, rung, target)

    def _hand_out(
        self, pool: _Pool, study: StudyRow, trial: TrialRow, worker: WorkerRow, now: datetime
    ) -> None:
        trial.state = TrialState.RUNNING
        trial.worker_id = worker.id
        trial.lease_token = secrets.token_urlsafe(24)
        trial.lease_expires_at = self.context.lease_until(now)
        trial.started_at = trial.started_at or now
        study.last_leased_at = now
        pool.running[study.id] = pool.running.get(study.id, 0) + 1

    def _ask(
        self, items: list[_Reserved]
    ) -> list[tuple[_Reserved, tuple[int, dict[str, Any]] | Exception]]:
        """Choose the params of the reserved trials through Optuna (outside our transaction),
        each study's stored in one Optuna transaction: per trial, (Optuna trial id, params), or
        the sampler's failure, which fails that trial, not the lease request."""
        if not items:
            return []
        requests = [
            search.AskRequest(item.study_name, item.optuna_study_id, item.spec, item.number)
            for item in items
        ]
        outcomes: list[tuple[int, dict[str, Any]] | Exception]
        try:
            outcomes = search.ask_many(self.context.transitions.optuna, requests)
        except Exception as exc:  # e.g. the database, before any trial was sampled
            outcomes = [exc] * len(items)
        return list(zip(items, outcomes, strict=True))

    def _assignments(
        self,
        trial_ids: list[int],
        sampled: list[tuple[_Reserved, tuple[int, dict[str, Any]] | Exception]],
    ) -> list[LeasedTrial]:
        """The leased trials that are running with params, in `trial_ids`' order, after
        storing the params sampled for the new ones: all in one transaction (a read-only one
        when nothing was sampled)."""
        if not sampled:
            with reading(self.context.db) as stores:
                return _assigned(stores, stores.trials.of_ids(trial_ids), trial_ids)
        with unit_of_work(self.context.db) as unit:
            trials = unit.trials.of_ids(trial_ids)
            by_id = {trial.id: trial for trial in trials}
            for item, outcome in sampled:
                self._store_sample(unit, by_id.get(item.trial_id), outcome)
            return _assigned(unit, trials, trial_ids)

    def _store_sample(
        self, unit: Unit, trial: TrialRow | None, outcome: tuple[int, dict[str, Any]] | Exception
    ) -> None:
        transitions = self.context.transitions
        if isinstance(outcome, Exception):
            if trial is not None:
                transitions.finish(unit, trial, TrialState.FAILED, f"sampling failed: {outcome}")
            return
        optuna_id, params = outcome
        if trial is None:  # the study was deleted meanwhile
            unit.later(search.tell, self.context.storage, optuna_id, TrialState.FAILED, None)
            return
        trial.optuna_trial_id, trial.params = optuna_id, params

    # -- while training ---------------------------------------------------------------------

    def heartbeat(self, worker_id: int, leases: list[tuple[int, str]]) -> dict[int, Decision]:
        """Renew the worker's leases; a trial that is no longer this worker's answers `stop`."""
        with unit_of_work(self.context.db) as unit:
            now = self.context.clock()
            worker = _worker(unit, worker_id)
            worker.last_seen_at, worker.state = now, WorkerState.ACTIVE
            decisions: dict[int, Decision] = {}
            for trial_id, token in leases:
                trial = unit.trials.get(trial_id)
                if trial is None or not holds(trial, token):
                    decisions[trial_id] = Decision.STOP
                elif trial.state is TrialState.RUNNING:
                    trial.lease_expires_at = self.context.lease_until(now)
                    decisions[trial_id] = Decision.CONTINUE
                else:
                    decisions[trial_id] = decision_for_finished(trial)
        return decisions


def _assigned(stores: Stores, trials: list[TrialRow], trial_ids: list[int]) -> list[LeasedTrial]:
    """The assignments of the `trials` that are running with params, in `trial_ids`' order."""
    out = [
        _assignment(stores, trial)
        for trial in trials
        if trial.state is TrialState.RUNNING and trial.params is not None
    ]
    return sorted(out, key=lambda a: trial_ids.index(a.trial.id))


def _assignment(stores: Stores, trial: TrialRow) -> LeasedTrial:
    study = stores.studies.get(trial.study_id)
    assert study is not None  # the foreign key
    spec = search.stored_spec(study.spec)
    return LeasedTrial(
        trial, study, spec, start_epoch=trial.epochs, target_epochs=target_epochs(trial, spec)
    )


def _worker(unit: Unit, worker_id: int) -> WorkerRow:
    worker = unit.workers.get(worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id} is not registered; register again")
    return worker
