"""The leasing half of the worker protocol: workers register and leave, lease trials, prove they
are alive with heartbeats, and the reaper takes trials back from workers that vanished.

A lease is a trial row's (token, expiry). New trials are reserved under the study's row lock
(SQLite: the write lock of `BEGIN IMMEDIATE`; PostgreSQL: `FOR UPDATE`), so `max_trials`,
`parallel_trials` and grid points can never be handed out twice, however many workers ask at once.
The lock order every writer keeps is written down in `service.domain.lease_checks`.

`Leasing` is the base class of `service.domain.protocol.Protocol` (that module says why).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from hpo.protocol import Decision, StudyState, TrialState
from service.domain import search
from service.domain.errors import NotFound
from service.domain.fidelity import locate
from service.domain.lease_checks import decision_for_finished, holds
from service.domain.spec import BUILTIN_DATASETS, BUILTIN_MODELS, DATASET_PREFIXES, StudySpec
from service.domain.transitions import Transitions, target_epochs
from service.domain.unit import Unit, unit_of_work
from service.settings import Settings
from service.storage.artifacts import ArtifactStore
from service.storage.db import Database
from service.storage.models import StudyRow, TrialRow, WorkerRow, utcnow


@dataclass(frozen=True)
class Assignment:
    """One leased trial, with everything a worker needs to train it."""

    trial: TrialRow
    study: StudyRow
    spec: StudySpec
    start_epoch: int  # epochs already trained (the checkpoint to resume from), 0 for a new one
    target_epochs: int  # train up to this epoch: the end of the trial's rung, or budget.epochs


@dataclass(frozen=True)
class _Reserved:
    trial_id: int
    number: int
    study_name: str
    optuna_study_id: int
    spec: StudySpec


def can_run(worker: WorkerRow, spec: StudySpec) -> bool:
    """Whether a worker has the model and dataset the study names."""
    caps = worker.capabilities or {}
    model, dataset = spec.workload.model, spec.workload.dataset
    model_ok = model in BUILTIN_MODELS or model in caps.get("models", [])
    dataset_ok = (
        dataset in BUILTIN_DATASETS
        or dataset.startswith(DATASET_PREFIXES)
        or dataset in caps.get("datasets", [])
    )
    return model_ok and dataset_ok


class Leasing:
    """Workers, their leases and their liveness; the state both halves of the protocol share
    (database, Optuna storage, settings, artifacts, clock, transitions) is set up here."""

    def __init__(
        self,
        db: Database,
        storage: RDBStorage,
        settings: Settings,
        artifacts: ArtifactStore,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.artifacts = artifacts
        self.clock = clock
        self.transitions = Transitions(storage, artifacts, lambda: self.clock())

    @property
    def _lease_span(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # -- workers ----------------------------------------------------------------------------

    def register(
        self, name: str, host: str, pid: int | None, device: str, capabilities: dict[str, Any]
    ) -> WorkerRow:
        with unit_of_work(self.db) as unit:
            now = self.clock()
            worker = WorkerRow(
                name=name,
                host=host,
                pid=pid,
                device=device,
                capabilities=capabilities,
                state="active",
                registered_at=now,
                last_seen_at=now,
            )
            unit.session.add(worker)
        return worker

    def list_workers(self) -> list[tuple[WorkerRow, list[TrialRow]]]:
        with self.db.read() as session:
            workers = list(session.scalars(select(WorkerRow).order_by(WorkerRow.id)))
            running = session.scalars(
                select(TrialRow).where(
                    TrialRow.state == TrialState.RUNNING.value, TrialRow.worker_id.is_not(None)
                )
            )
            by_worker: dict[int, list[TrialRow]] = {}
            for trial in running:
                by_worker.setdefault(trial.worker_id or 0, []).append(trial)
        return [(w, by_worker.get(w.id, [])) for w in workers]

    def deregister(self, worker_id: int) -> None:
        with unit_of_work(self.db) as unit:
            worker = self._worker(unit.session, worker_id)
            worker.state = "gone"
            worker.last_seen_at = self.clock()

    # -- leasing ----------------------------------------------------------------------------

    def lease(
        self, worker_id: int, count: int = 1, held: Collection[int] | None = None
    ) -> list[Assignment]:
        """Give the worker up to `count` trials: re-leases of queued trials first, then new ones,
        spreading work over running studies (fewest running trials first).

        `held`, when given, lists the trials the worker is training now: any other trial leased
        to it is one whose answer never reached it, and is queued again first (see
        `take_back_unheard`)."""
        if self._any_expired(self.clock()):
            self.reap()  # its own transaction: it locks studies that may not be running
        if held is not None:
            self.take_back_unheard(worker_id, held)
        with unit_of_work(self.db) as unit:
            now = self.clock()
            worker = self._worker(unit.session, worker_id)
            worker.last_seen_at, worker.state = now, "active"
            taken: list[TrialRow] = []
            reserved: list[_Reserved] = []
            for _ in range(count):
                got = self._take_one(unit, worker, now)
                if got is None:
                    break
                taken.append(got[0])
                if got[1] is not None:
                    reserved.append(got[1])
        for item in reserved:
            self._sample(item)
        return self._assignments([t.id for t in taken])

    def _take_one(
        self, unit: Unit, worker: WorkerRow, now: datetime
    ) -> tuple[TrialRow, _Reserved | None] | None:
        session = unit.session
        for study in self._studies_by_need(session):
            spec = search.stored_spec(study.spec)
            if not can_run(worker, spec):
                continue
            running = (
                session.scalar(
                    select(func.count()).where(
                        TrialRow.study_id == study.id, TrialRow.state == TrialState.RUNNING.value
                    )
                )
                or 0
            )
            if running >= study.parallel_trials:
                continue
            queued = session.scalars(
                select(TrialRow)
                .where(TrialRow.study_id == study.id, TrialRow.state == TrialState.QUEUED.value)
                .order_by(TrialRow.number)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if queued is not None:
                self.transitions.restart(unit, queued, spec.objective.metric)
                self._hand_out(unit, queued, worker, now)
                study.last_leased_at = now
                return queued, None
            if study.n_trials >= study.max_trials:
                continue
            trial = TrialRow(
                study_id=study.id,
                number=study.n_trials,
                state=TrialState.RUNNING.value,
                params=None,
                epochs=0,
                attempt=1,
            )
            if spec.strategy.is_multi_fidelity:
                brackets = spec.brackets()
                trial.bracket = locate(brackets, trial.number)
                trial.rung, trial.target_epochs = 0, brackets[trial.bracket].rungs[0].epochs
            study.n_trials += 1
            study.last_leased_at = now
            session.add(trial)
            self._hand_out(unit, trial, worker, now)
            assert study.optuna_study_id is not None
            reserved = _Reserved(trial.id, trial.number, study.name, study.optuna_study_id, spec)
            return trial, reserved
        return None

    def _studies_by_need(self, session: Session) -> list[StudyRow]:
        """Running studies, row-locked in id order (the order every writer locks them in), the
        one with fewest running trials (then the one served longest ago) first: several
        studies share the workers fairly."""
        studies = list(
            session.scalars(
                select(StudyRow)
                .where(StudyRow.state == StudyState.RUNNING.value)
                .order_by(StudyRow.id)
                .with_for_update()
            )
        )
        counted = session.execute(
            select(TrialRow.study_id, func.count())
            .where(TrialRow.state == TrialState.RUNNING.value)
            .group_by(TrialRow.study_id)
        )
        running = {study_id: n for study_id, n in counted}
        never = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(
            studies, key=lambda s: (running.get(s.id, 0), s.last_leased_at or never, s.id)
        )

    def _hand_out(self, unit: Unit, trial: TrialRow, worker: WorkerRow, now: datetime) -> None:
        trial.state = TrialState.RUNNING.value
        trial.worker_id = worker.id
        trial.lease_token = secrets.token_urlsafe(24)
        trial.lease_expires_at = now + self._lease_span
        trial.started_at = trial.started_at or now
        unit.session.flush()
        unit.event(
            trial.study_id,
            "trial_started",
            trial.id,
            number=trial.number,
            worker=worker.name,
            attempt=trial.attempt,
        )

    def _sample(self, item: _Reserved) -> None:
        """Choose the params of a reserved trial through Optuna (outside our transaction)."""
        try:
            optuna_id, params = search.ask(
                self.transitions.optuna,
                item.study_name,
                item.optuna_study_id,
                item.spec,
                item.number,
            )
        except Exception as exc:  # a sampler failure fails this trial, not the lease request
            with unit_of_work(self.db) as unit:
                trial = unit.session.get(TrialRow, item.trial_id)
                if trial is not None:
                    self.transitions.finish(
                        unit, trial, TrialState.FAILED, f"sampling failed: {exc}"
                    )
            return
        with unit_of_work(self.db) as unit:
            trial = unit.session.get(TrialRow, item.trial_id)
            if trial is None:  # the study was deleted meanwhile
                unit.later(search.tell, self.storage, optuna_id, "failed", None)
                return
            trial.optuna_trial_id, trial.params = optuna_id, params

    def _assignments(self, trial_ids: list[int]) -> list[Assignment]:
        if not trial_ids:
            return []
        with self.db.read() as session:
            out = []
            for trial in session.scalars(select(TrialRow).where(TrialRow.id.in_(trial_ids))):
                if trial.state != TrialState.RUNNING.value or trial.params is None:
                    continue
                study = session.get(StudyRow, trial.study_id)
                assert study is not None
                spec = search.stored_spec(study.spec)
                out.append(
                    Assignment(
                        trial,
                        study,
                        spec,
                        start_epoch=trial.epochs,
                        target_epochs=target_epochs(trial, spec),
                    )
                )
            return sorted(out, key=lambda a: trial_ids.index(a.trial.id))

    # -- while training ---------------------------------------------------------------------

    def heartbeat(self, worker_id: int, leases: list[tuple[int, str]]) -> dict[int, Decision]:
        """Renew the worker's leases; a trial that is no longer this worker's answers `stop`."""
        with unit_of_work(self.db) as unit:
            now = self.clock()
            worker = self._worker(unit.session, worker_id)
            worker.last_seen_at, worker.state = now, "active"
            decisions: dict[int, Decision] = {}
            for trial_id, token in leases:
                trial = unit.session.get(TrialRow, trial_id)
                if trial is None or not holds(trial, token):
                    decisions[trial_id] = Decision.STOP
                elif trial.state == TrialState.RUNNING.value:
                    trial.lease_expires_at = now + self._lease_span
                    decisions[trial_id] = Decision.CONTINUE
                else:
                    decisions[trial_id] = decision_for_finished(trial)
        return decisions

    # -- reaping ----------------------------------------------------------------------------

    def reap(self) -> int:
        """Take back every expired lease; returns how many. Safe to run from any process."""
        with unit_of_work(self.db) as unit:
            return self._reap(unit, self.clock())

    def _reap(self, unit: Unit, now: datetime) -> int:
        expired_now = (TrialRow.state == TrialState.RUNNING.value) & (
            TrialRow.lease_expires_at < now
        )
        expired = self._locked(unit.session, expired_now)
        for trial in expired:
            if trial.attempt >= self.settings.max_attempts:
                self.transitions.finish(
                    unit,
                    trial,
                    TrialState.FAILED,
                    f"its worker vanished {trial.attempt} times (lease expired)",
                )
                continue
            trial.attempt += 1
            self.transitions.release(unit, trial, TrialState.QUEUED)
        return len(expired)

    def take_back_unheard(self, worker_id: int, held: Collection[int]) -> int:
        """Queue again the running trials leased to this worker other than `held`; returns how
        many. A worker asking for work while such a trial exists never heard of it: the answer
        that carried it was lost (a reset connection, a server killed after committing) and the
        worker asked again. Without this the trial would wait for its lease to expire and lose
        an attempt; nothing was trained, so no attempt is counted."""
        unheard = (
            (TrialRow.worker_id == worker_id)
            & (TrialRow.state == TrialState.RUNNING.value)
            & TrialRow.id.not_in(list(held))
        )
        with self.db.read() as session:
            if session.scalar(select(TrialRow.id).where(unheard).limit(1)) is None:
                return 0
        with unit_of_work(self.db) as unit:
            trials = self._locked(unit.session, unheard)
            for trial in trials:
                self.transitions.release(unit, trial, TrialState.QUEUED)
            return len(trials)

    def _any_expired(self, now: datetime) -> bool:
        with self.db.read() as session:
            query = select(TrialRow.id).where(
                TrialRow.state == TrialState.RUNNING.value, TrialRow.lease_expires_at < now
            )
            return session.scalar(query.limit(1)) is not None

    @staticmethod
    def _locked(session: Session, where: ColumnElement[bool]) -> list[TrialRow]:
        """The trials matching `where`, row-locked with their studies: studies before trials,
        each in id order, the order every writer locks them in. A trial another transaction
        holds is skipped (it is being changed; the next pass sees it)."""
        found = session.execute(select(TrialRow.id, TrialRow.study_id).where(where))
        ids, study_ids = set(), set()
        for trial_id, study_id in found:
            ids.add(trial_id)
            study_ids.add(study_id)
        if not ids:
            return []
        session.execute(
            select(StudyRow.id)
            .where(StudyRow.id.in_(study_ids))
            .order_by(StudyRow.id)
            .with_for_update()
        )
        return list(
            session.scalars(
                select(TrialRow)
                .where(TrialRow.id.in_(ids), where)
                .order_by(TrialRow.id)
                .with_for_update(skip_locked=True)
            )
        )

    # -- lookups ----------------------------------------------------------------------------

    @staticmethod
    def _worker(session: Session, worker_id: int) -> WorkerRow:
        worker = session.get(WorkerRow, worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered; register again")
        return worker
