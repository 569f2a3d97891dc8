"""The trials table: create trials, lock them for a change, and the lookups and counts that the
worker protocol, study steering and the page make."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from hpo.protocol import FINISHED_TRIAL_STATES, TrialState
from service.storage import dialect, locks
from service.storage.models import StudyRow, TrialRow


class TrialFacts(NamedTuple):
    """The few columns of a trial that ranking and sampling on the page need."""

    id: int
    number: int
    state: TrialState
    value: float | None
    epochs: int


class RungCount(NamedTuple):
    """Trials of one (bracket, rung) in one state, with their lowest and highest value."""

    bracket: int
    rung: int
    state: TrialState
    trials: int
    low: float | None
    high: float | None


class NamingTrial(NamedTuple):
    """A trial that names an Optuna trial (`TrialStore.naming`)."""

    id: int
    optuna_trial_id: int
    finished_before: bool  # finished before the time asked about


_RUNNING = TrialRow.state == TrialState.RUNNING
# What a report or a heartbeat changes on a held trial (see `TrialStore.write_progress`).
_PROGRESS = frozenset({"epochs", "value", "values", "lease_expires_at"})


class TrialStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- one trial ----------------------------------------------------------------------------

    def create(
        self, study_id: int, number: int, bracket: int, rung: int, target_epochs: int | None
    ) -> TrialRow:
        """A new trial, running, with no params yet (they are sampled after the commit);
        written, and given its id, at the unit's next flush."""
        trial = TrialRow(
            study_id=study_id,
            number=number,
            state=TrialState.RUNNING,
            params=None,
            epochs=0,
            attempt=1,
            bracket=bracket,
            rung=rung,
            target_epochs=target_epochs,
        )
        self.session.add(trial)
        return trial

    def get(self, trial_id: int) -> TrialRow | None:
        return self.session.get(TrialRow, trial_id)

    def lock_for_report(self, trial_id: int) -> tuple[StudyRow, TrialRow] | None:
        """The trial and its study, row-locked in the lock order (study, then trial), for a
        change its lease holder asks for; None when the trial does not exist."""
        locks.trial_with_study(self.session, trial_id)
        trial = self.session.get(TrialRow, trial_id)
        if trial is None:
            return None
        study = self.session.get(StudyRow, trial.study_id)
        assert study is not None  # the foreign key
        return study, trial

    def lock_for_reports(
        self,
        trial_ids: Collection[int],
        exclusive: Callable[[dict[str, Any]], bool] = lambda _spec: True,
    ) -> dict[int, tuple[StudyRow, TrialRow]]:
        """`lock_for_report` for several trials at once (a batched report): each existing
        trial with its study, by trial id, all locked in the lock order; missing trials are
        left out. A study whose spec (as stored) `exclusive` refuses is locked for share
        only, so that other such reports of its trials go on at once: for a caller that
        neither changes the study row nor decides over its other trials."""
        pairs = locks.named_trials_with_studies(self.session, set(trial_ids), exclusive)
        return {trial.id: (study, trial) for study, trial in pairs}

    def write_progress(self) -> None:
        """Write, in one statement, the trials of this session whose only changes are what
        a report or a heartbeat changes (epochs, value, values, lease expiry), and mark them
        written, so the flush that follows leaves them alone: the ORM's flush wrote a batch
        of 128 reports' trials one UPDATE a row (an executemany on SQLite, 128 pipelined
        statements on PostgreSQL), with its bookkeeping for each. Any other change of a
        trial (its state, its worker) goes out with the ORM's flush as before."""
        changed: list[TrialRow] = []
        for row in self.session.dirty:
            if isinstance(row, TrialRow):
                keys = instance_state(row).committed_state.keys()
                if keys and keys <= _PROGRESS:
                    changed.append(row)
        if not changed:
            return
        changed.sort(key=lambda row: row.id)
        rows = [{c: getattr(row, c) for c in ("id", *_PROGRESS)} for row in changed]
        held = locks.held_trials(self.session)  # a batched report's, locked in order
        locked = all(row.id in held for row in changed)
        with self.session.no_autoflush:  # else the ORM writes them first, its own way
            dialect.update_rows(self.session, TrialRow.__table__, rows, "id", locked=locked)
        # Written: clean, as the ORM leaves a row it flushed (set_committed_value alone kept
        # each row "modified", so the flush after this took them all through its unit of
        # work, to find nothing to write: a sixth of a batch of 8's time in process).
        # instance_state, not inspect(): inspect walks the class's bases each time, 3 times
        # a trial was a tenth of a batch of 128's time.
        identity_map = self.session.identity_map
        for row in changed:
            state = instance_state(row)
            state._commit_all(state.dict, identity_map)

    def take_queued(self, study_id: int) -> TrialRow | None:
        """The study's lowest-numbered queued trial that no other lease is taking, locked.
        The caller holds the study's row lock."""
        where = (TrialRow.study_id == study_id) & (TrialRow.state == TrialState.QUEUED)
        return locks.first_free_trial(self.session, where)

    # -- leases -------------------------------------------------------------------------------

    def any_expired(self, now: datetime) -> bool:
        query = select(TrialRow.id).where(_RUNNING, TrialRow.lease_expires_at < now).limit(1)
        return self.session.scalar(query) is not None

    def lock_expired(self, now: datetime) -> list[TrialRow]:
        """Running trials whose lease expired before `now`, locked (skipping held ones)."""
        expired = _RUNNING & (TrialRow.lease_expires_at < now)
        return locks.trials_with_studies(self.session, expired)

    def any_unheard(self, worker_id: int, held: Collection[int]) -> bool:
        query = select(TrialRow.id).where(_unheard(worker_id, held)).limit(1)
        return self.session.scalar(query) is not None

    def lock_unheard(self, worker_id: int, held: Collection[int]) -> list[TrialRow]:
        """Running trials leased to the worker other than `held`, locked."""
        return locks.trials_with_studies(self.session, _unheard(worker_id, held))

    def any_unsampled(self, study_id: int) -> bool:
        """Whether a running or queued trial of the study has no Optuna trial yet: a lease is
        sampling it now, or a server stopped before it stored the sample (the next lease samples
        it again)."""
        query = select(TrialRow.id).where(
            TrialRow.study_id == study_id,
            TrialRow.state.in_([TrialState.RUNNING, TrialState.QUEUED]),
            TrialRow.optuna_trial_id.is_(None),
        )
        return self.session.scalar(query.limit(1)) is not None

    def naming(
        self, study_id: int, optuna_trial_ids: Collection[int], finished_before: datetime
    ) -> list[NamingTrial]:
        """The study's trials that name one of `optuna_trial_ids` as their Optuna trial, each
        with whether it finished before `finished_before`, in statements of 1000 ids at most
        (bounded, whatever is running)."""
        ended = and_(
            TrialRow.state.in_(sorted(FINISHED_TRIAL_STATES)),
            TrialRow.finished_at < finished_before,
        )
        ids, found = list(optuna_trial_ids), list[NamingTrial]()
        for start in range(0, len(ids), 1000):
            query = select(TrialRow.id, TrialRow.optuna_trial_id, ended).where(
                TrialRow.study_id == study_id,
                TrialRow.optuna_trial_id.in_(ids[start : start + 1000]),
            )
            rows = self.session.execute(query)
            found.extend(NamingTrial(i, o, bool(e)) for i, o, e in rows if o is not None)
        return found

    def running_by_worker(self) -> dict[int, list[TrialRow]]:
        rows = self.session.scalars(
            select(TrialRow).where(_RUNNING, TrialRow.worker_id.is_not(None))
        )
        by_worker: dict[int, list[TrialRow]] = {}
        for trial in rows:
            by_worker.setdefault(trial.worker_id or 0, []).append(trial)
        return by_worker

    def count_running(self, study_id: int) -> int:
        query = select(func.count()).where(TrialRow.study_id == study_id, _RUNNING)
        return self.session.scalar(query) or 0

    def running_per_study(self) -> dict[int, int]:
        rows = self.session.execute(
            select(TrialRow.study_id, func.count()).where(_RUNNING).group_by(TrialRow.study_id)
        )
        return {study_id: n for study_id, n in rows}

    def count_leases(self, now: datetime) -> tuple[int, int]:
        """Running trials whose lease holds at `now`, and those whose lease expired."""
        active = self.session.scalar(
            select(func.count()).where(_RUNNING, TrialRow.lease_expires_at >= now)
        )
        expired = self.session.scalar(
            select(func.count()).where(_RUNNING, TrialRow.lease_expires_at < now)
        )
        return active or 0, expired or 0

    # -- a study's trials ---------------------------------------------------------------------

    def of_ids(self, ids: Collection[int]) -> list[TrialRow]:
        if not ids:
            return []
        return list(self.session.scalars(select(TrialRow).where(TrialRow.id.in_(ids))))

    def of_study(self, study_id: int, state: TrialState | None = None) -> list[TrialRow]:
        query = select(TrialRow).where(TrialRow.study_id == study_id)
        if state is not None:
            query = query.where(TrialRow.state == state)
        return list(self.session.scalars(query))

    def page(self, study_id: int, after: int | None, limit: int) -> list[TrialRow]:
        """Up to `limit` trials by number, after trial number `after` (None: from the first)."""
        query = select(TrialRow).where(TrialRow.study_id == study_id)
        if after is not None:
            query = query.where(TrialRow.number > after)
        return list(self.session.scalars(query.order_by(TrialRow.number).limit(limit)))

    def best_completed(self, study_id: int, maximize: bool) -> TrialRow | None:
        """The completed trial with the best value (ties: the lower number)."""
        order = TrialRow.value.desc() if maximize else TrialRow.value
        query = (
            select(TrialRow)
            .where(
                TrialRow.study_id == study_id,
                TrialRow.state == TrialState.COMPLETED,
                TrialRow.value.is_not(None),
            )
            .order_by(order, TrialRow.number)
            .limit(1)
        )
        return self.session.scalars(query).first()

    def count_by_state(self, study_id: int) -> dict[TrialState, int]:
        """The study's trials per state, every state present (0 when none)."""
        counts = dict.fromkeys(TrialState, 0)
        rows = self.session.execute(
            select(TrialRow.state, func.count())
            .where(TrialRow.study_id == study_id)
            .group_by(TrialRow.state)
        )
        for state, n in rows:
            counts[state] = n
        return counts

    def count_by_study_and_state(self) -> list[tuple[str, TrialState, int]]:
        """(study name, state, trials) for every study and state that has trials."""
        rows = self.session.execute(
            select(StudyRow.name, TrialRow.state, func.count())
            .join(TrialRow, TrialRow.study_id == StudyRow.id)
            .group_by(StudyRow.name, TrialRow.state)
        )
        return [(name, state, n) for name, state, n in rows]

    def checkpoint_ids(self, study_id: int) -> list[str]:
        query = select(TrialRow.checkpoint_id).where(
            TrialRow.study_id == study_id, TrialRow.checkpoint_id.is_not(None)
        )
        return [c for c in self.session.scalars(query) if c is not None]

    def with_models(self, study_id: int) -> list[TrialRow]:
        """The study's trials that hold a kept model file, by number."""
        query = select(TrialRow).where(
            TrialRow.study_id == study_id, TrialRow.model_id.is_not(None)
        )
        return list(self.session.scalars(query.order_by(TrialRow.number)))

    def model_ids(self, study_id: int) -> list[str]:
        query = select(TrialRow.model_id).where(
            TrialRow.study_id == study_id, TrialRow.model_id.is_not(None)
        )
        return [m for m in self.session.scalars(query) if m is not None]

    # -- what the page reads ------------------------------------------------------------------

    def facts(self, study_id: int) -> list[TrialFacts]:
        """Id, number, state, value and epochs of every trial of the study, by number."""
        # Core execution: thousands of plain tuples, no ORM bookkeeping needed.
        rows = self.session.execute(
            select(TrialRow.id, TrialRow.number, TrialRow.state, TrialRow.value, TrialRow.epochs)
            .where(TrialRow.study_id == study_id)
            .order_by(TrialRow.number)
        )
        return [TrialFacts(*row) for row in rows]

    def params_of(self, ids: Collection[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        rows = self.session.execute(
            select(TrialRow.id, TrialRow.params).where(TrialRow.id.in_(ids))
        )
        return {trial_id: params or {} for trial_id, params in rows}

    def latest_reporting(self, study_id: int, count: int) -> list[int]:
        """Ids of the `count` highest-numbered trials that reported an epoch."""
        query = (
            select(TrialRow.id)
            .where(TrialRow.study_id == study_id, TrialRow.epochs > 0)
            .order_by(TrialRow.number.desc())
            .limit(count)
        )
        return list(self.session.scalars(query))

    def positions(self, study_id: int) -> list[tuple[int, int]]:
        """(bracket, rung) of every trial of the study."""
        query = select(TrialRow.bracket, TrialRow.rung).where(TrialRow.study_id == study_id)
        return [(bracket, rung) for bracket, rung in self.session.execute(query)]

    def count_by_rung(self, study_id: int) -> list[RungCount]:
        """Trials per (bracket, rung, state) with their value range, in bracket, rung order."""
        key = (TrialRow.bracket, TrialRow.rung)
        rows = self.session.execute(
            select(
                *key,
                TrialRow.state,
                func.count(),
                func.min(TrialRow.value),
                func.max(TrialRow.value),
            )
            .where(TrialRow.study_id == study_id)
            .group_by(*key, TrialRow.state)
            .order_by(*key)
        )
        return [RungCount(*row) for row in rows]


def _unheard(worker_id: int, held: Collection[int]) -> Any:
    return (TrialRow.worker_id == worker_id) & _RUNNING & TrialRow.id.not_in(list(held))
