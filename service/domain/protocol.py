"""The worker protocol: register, lease, heartbeat, report, complete, fail, release, and the
reaper that takes trials back from workers that vanished.

Coordination lives in the database. A lease is a row's (token, expiry); every write checks the
token inside a write transaction, so a worker presumed dead cannot change a trial that was handed
to another (it gets StaleLease, 409). New trials are reserved under the study's row lock (SQLite:
the write lock of `BEGIN IMMEDIATE`; PostgreSQL: `FOR UPDATE`), so `max_trials`,
`parallel_trials` and grid points can never be handed out twice, however many workers ask at once.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.domain import search
from service.domain.errors import NotFound, StaleLease, StorageFailed
from service.domain.fidelity import locate
from service.domain.spec import BUILTIN_DATASETS, BUILTIN_MODELS, DATASET_PREFIXES, StudySpec
from service.domain.states import Decision, StudyState, TrialState
from service.domain.transitions import Transitions, objective_of, target_epochs
from service.domain.unit import Unit, unit_of_work
from service.settings import Settings
from service.storage.artifacts import ArtifactError, ArtifactStore
from service.storage.db import Database
from service.storage.models import MetricRow, StudyRow, TrialRow, WorkerRow, utcnow


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


class Protocol:
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

    def lease(self, worker_id: int, count: int = 1) -> list[Assignment]:
        """Give the worker up to `count` trials: re-leases of queued trials first, then new ones,
        spreading work over running studies (fewest running trials first)."""
        if self._any_expired(self.clock()):
            self.reap()  # its own transaction: it locks studies that may not be running
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
                if trial is None or trial.lease_token != token:
                    decisions[trial_id] = Decision.STOP
                elif trial.state == TrialState.RUNNING.value:
                    trial.lease_expires_at = now + self._lease_span
                    decisions[trial_id] = Decision.CONTINUE
                else:
                    decisions[trial_id] = _decision_for_finished(trial)
        return decisions

    def report(
        self, worker_id: int, trial_id: int, token: str, epoch: int, metrics: dict[str, float]
    ) -> Decision:
        """Store one epoch's metrics and say whether to go on. Idempotent per (trial, epoch)."""
        with unit_of_work(self.db) as unit:
            now = self.clock()
            study, trial = self._lock(unit.session, trial_id, token)
            if trial.state != TrialState.RUNNING.value:
                return _decision_for_finished(trial)
            trial.lease_expires_at = now + self._lease_span
            if unit.session.get(MetricRow, (trial.id, epoch)) is None:
                self._record(unit, study, trial, epoch, metrics, now)
            spec = search.stored_spec(study.spec)
            if self._at_rung_end(trial, spec):
                self._pause_for_promotion(unit, study, trial)
                return Decision.PAUSE
            if study.state == StudyState.STOPPED.value:
                self.transitions.release(unit, trial, TrialState.PAUSED)
                return Decision.PAUSE
            value = trial.value
            study_name, optuna_id = study.name, trial.optuna_trial_id
            optuna_study_id = study.optuna_study_id
        if value is None or optuna_id is None or optuna_study_id is None or epoch != trial.epochs:
            return Decision.CONTINUE
        pruned = search.report(
            self.transitions.optuna, study_name, optuna_study_id, spec, optuna_id, epoch, value
        )
        if not pruned:
            return Decision.CONTINUE
        return self._prune(trial_id, token, epoch)

    @staticmethod
    def _at_rung_end(trial: TrialRow, spec: StudySpec) -> bool:
        """The trial finished a rung of successive halving that is not the last one."""
        target = target_epochs(trial, spec)
        return trial.epochs >= target and target < spec.budget.epochs

    def _pause_for_promotion(self, unit: Unit, study: StudyRow, trial: TrialRow) -> None:
        self.transitions.release(unit, trial, TrialState.PAUSED)
        unit.session.flush()
        self.transitions.advance_rungs(unit, study)

    def _record(
        self,
        unit: Unit,
        study: StudyRow,
        trial: TrialRow,
        epoch: int,
        metrics: dict[str, float],
        now: datetime,
    ) -> None:
        unit.session.add(
            MetricRow(trial_id=trial.id, epoch=epoch, metrics=metrics, reported_at=now)
        )
        if epoch >= trial.epochs:
            trial.epochs = epoch
            trial.value = objective_of(metrics, study.spec["objective"]["metric"])
        unit.event(
            study.id, "trial_reported", trial.id, number=trial.number, epoch=epoch, metrics=metrics
        )

    def _prune(self, trial_id: int, token: str, epoch: int) -> Decision:
        with unit_of_work(self.db) as unit:
            _study, trial = self._lock(unit.session, trial_id, token)
            if trial.state != TrialState.RUNNING.value:
                return _decision_for_finished(trial)
            self.transitions.finish(unit, trial, TrialState.PRUNED, f"pruned at epoch {epoch}")
        return Decision.PRUNE

    def complete(self, worker_id: int, trial_id: int, token: str) -> TrialRow:
        """The trial trained all its epochs; its value is the objective at its last report."""
        with unit_of_work(self.db) as unit:
            study, trial = self._lock(unit.session, trial_id, token)
            if trial.state == TrialState.COMPLETED.value:
                return trial
            self._require_running(trial)
            metric = study.spec["objective"]["metric"]
            if self._at_rung_end(trial, search.stored_spec(study.spec)):
                self._pause_for_promotion(unit, study, trial)  # a rung's end, not the trial's
            elif trial.epochs == 0:
                self.transitions.finish(
                    unit, trial, TrialState.FAILED, "the trial reported no epoch"
                )
            elif trial.value is None or not math.isfinite(trial.value):
                self.transitions.finish(
                    unit,
                    trial,
                    TrialState.FAILED,
                    f"objective '{metric}' was not a finite number at the last report",
                )
            else:
                self.transitions.finish(unit, trial, TrialState.COMPLETED, None)
        return trial

    def fail(self, worker_id: int, trial_id: int, token: str, reason: str) -> TrialRow:
        """The trial failed for a reason of its own (NaN loss, bad data): not retried."""
        with unit_of_work(self.db) as unit:
            _study, trial = self._lock(unit.session, trial_id, token)
            if trial.state == TrialState.FAILED.value:
                return trial
            self._require_running(trial)
            self.transitions.finish(unit, trial, TrialState.FAILED, reason[:2000] or "failed")
        return trial

    def release(self, worker_id: int, trial_id: int, token: str) -> TrialRow:
        """The worker gives the trial back unfinished (it is shutting down): queued again,
        not counted as a failed attempt."""
        with unit_of_work(self.db) as unit:
            _study, trial = self._lock(unit.session, trial_id, token)
            if trial.state == TrialState.RUNNING.value:
                self.transitions.release(unit, trial, TrialState.QUEUED)
        return trial

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(
        self, worker_id: int, trial_id: int, token: str, epoch: int, chunks: Iterable[bytes]
    ) -> TrialRow:
        """Store the trial's checkpoint taken after `epoch`; the one before it is removed.

        Raises StaleLease when the trial is not this lease's, StorageFailed (and fails the
        trial with the reason) when the artifacts folder cannot take it."""
        with self.db.read() as session:
            self._require_running(self._leased(session, trial_id, token))
        artifact = self.artifacts.new_id()
        try:
            self.artifacts.write(artifact, chunks)
        except ArtifactError as exc:
            with unit_of_work(self.db) as unit:
                _study, trial = self._lock(unit.session, trial_id, token)
                if trial.state == TrialState.RUNNING.value:
                    self.transitions.finish(
                        unit, trial, TrialState.FAILED, f"its checkpoint could not be stored: {exc}"
                    )
            raise StorageFailed(str(exc)) from exc
        try:
            with unit_of_work(self.db) as unit:
                _study, trial = self._lock(unit.session, trial_id, token)
                self._require_running(trial)
                unit.later(self.artifacts.delete, trial.checkpoint_id)
                trial.checkpoint_id, trial.checkpoint_epoch = artifact, epoch
        except Exception:
            self.artifacts.delete(artifact)
            raise
        return trial

    def checkpoint_path(
        self, worker_id: int, trial_id: int, token: str, checkpoint_id: str
    ) -> Path:
        """The file of the trial's current checkpoint, for the worker that leased it."""
        with self.db.read() as session:
            trial = self._leased(session, trial_id, token)
            if not self.artifacts.valid_id(checkpoint_id) or checkpoint_id != trial.checkpoint_id:
                raise NotFound(f"trial {trial_id} has no checkpoint {checkpoint_id[:80]!r}")
        path = self.artifacts.path(checkpoint_id)
        if not path.is_file():
            raise NotFound(f"the checkpoint of trial {trial_id} is gone from the artifacts folder")
        return path

    # -- reaping ----------------------------------------------------------------------------

    def reap(self) -> int:
        """Take back every expired lease; returns how many. Safe to run from any process."""
        with unit_of_work(self.db) as unit:
            return self._reap(unit, self.clock())

    def _reap(self, unit: Unit, now: datetime) -> int:
        expired_now = (TrialRow.state == TrialState.RUNNING.value) & (
            TrialRow.lease_expires_at < now
        )
        found = unit.session.execute(select(TrialRow.id, TrialRow.study_id).where(expired_now))
        ids, study_ids = set(), set()
        for trial_id, study_id in found:
            ids.add(trial_id)
            study_ids.add(study_id)
        if not ids:
            return 0
        # Studies before trials, each in id order: the order every writer locks them in.
        unit.session.execute(
            select(StudyRow.id)
            .where(StudyRow.id.in_(study_ids))
            .order_by(StudyRow.id)
            .with_for_update()
        )
        expired = list(
            unit.session.scalars(
                select(TrialRow)
                .where(TrialRow.id.in_(ids), expired_now)
                .order_by(TrialRow.id)
                .with_for_update(skip_locked=True)
            )
        )
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

    def _any_expired(self, now: datetime) -> bool:
        with self.db.read() as session:
            query = select(TrialRow.id).where(
                TrialRow.state == TrialState.RUNNING.value, TrialRow.lease_expires_at < now
            )
            return session.scalar(query.limit(1)) is not None

    # -- lookups ----------------------------------------------------------------------------

    @staticmethod
    def _worker(session: Session, worker_id: int) -> WorkerRow:
        worker = session.get(WorkerRow, worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered; register again")
        return worker

    @classmethod
    def _lock(cls, session: Session, trial_id: int, token: str) -> tuple[StudyRow, TrialRow]:
        """The trial and its study, row-locked in the one order every writer uses (study, then
        trial), after checking the lease token. On SQLite the write lock already serializes."""
        study_id = None
        if session.get_bind().dialect.name != "sqlite":  # SQLite: BEGIN IMMEDIATE locks all
            study_id = session.scalar(select(TrialRow.study_id).where(TrialRow.id == trial_id))
        if study_id is not None:
            session.scalars(
                select(StudyRow).where(StudyRow.id == study_id).with_for_update()
            ).first()
            session.scalars(
                select(TrialRow).where(TrialRow.id == trial_id).with_for_update()
            ).first()
        trial = cls._leased(session, trial_id, token)
        study = session.get(StudyRow, trial.study_id)
        assert study is not None
        return study, trial

    @staticmethod
    def _leased(session: Session, trial_id: int, token: str) -> TrialRow:
        trial = session.get(TrialRow, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} not found (its study may have been deleted)")
        # As bytes: compare_digest raises TypeError for str with non-ASCII characters.
        current = trial.lease_token
        if current is None or not secrets.compare_digest(current.encode(), token.encode()):
            raise StaleLease(
                f"lease token of trial {trial_id} is stale: the trial was handed to another "
                "worker or ended"
            )
        return trial

    @staticmethod
    def _require_running(trial: TrialRow) -> None:
        if trial.state != TrialState.RUNNING.value:
            raise StaleLease(f"trial {trial.id} is {trial.state}, not running")


def _decision_for_finished(trial: TrialRow) -> Decision:
    if trial.state == TrialState.PRUNED.value:
        return Decision.PRUNE
    if trial.state == TrialState.PAUSED.value:
        return Decision.PAUSE
    return Decision.STOP
