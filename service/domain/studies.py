"""Studies: create from a spec, look at them (counts, best, trials, curves), stop, resume, change
the budget, delete. Worker-facing operations live in `service.domain.protocol`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hpo.protocol import StudyState, TrialState
from service.domain import search
from service.domain.errors import Conflict, InvalidInput, NotFound
from service.domain.protocol import can_run
from service.domain.spec import StudySpec
from service.domain.spec.space import grid_size
from service.domain.transitions import Transitions, counts_by_state, target_epochs
from service.domain.unit import unit_of_work
from service.storage.artifacts import ArtifactStore
from service.storage.db import Database
from service.storage.models import MetricRow, StudyRow, TrialRow, WorkerRow, utcnow

MAX_PAGE = 1000


@dataclass(frozen=True)
class StudyView:
    row: StudyRow
    counts: dict[str, int]
    best: TrialRow | None
    waiting: str | None = None  # why a running study gets no trials, when it is known


@dataclass(frozen=True)
class TrialPage:
    items: list[TrialRow]
    next: int | None
    workers: dict[int, str]


@dataclass(frozen=True)
class TrialDetail:
    row: TrialRow
    curve: list[MetricRow]
    workers: dict[int, str]


def registered_names(session: Session) -> dict[str, set[str]]:
    """Plugin model / dataset names that some registered worker can run."""
    names: dict[str, set[str]] = {"models": set(), "datasets": set()}
    for caps in session.scalars(select(WorkerRow.capabilities)):
        for key in names:
            names[key].update((caps or {}).get(key, []))
    return names


def best_trial(session: Session, study: StudyRow) -> TrialRow | None:
    spec = search.stored_spec(study.spec)
    order = TrialRow.value.desc() if spec.objective.direction == "maximize" else TrialRow.value
    return session.scalars(
        select(TrialRow)
        .where(
            TrialRow.study_id == study.id,
            TrialRow.state == TrialState.COMPLETED.value,
            TrialRow.value.is_not(None),
        )
        .order_by(order, TrialRow.number)
        .limit(1)
    ).first()


def waiting_reason(session: Session, row: StudyRow, seen_since: datetime) -> str | None:
    """Why a running study that names a plugin model or dataset gets no trials: no active worker
    (registered, not gone, seen since `seen_since`) can run it. None when one can."""
    spec = search.stored_spec(row.spec)
    if row.state != StudyState.RUNNING.value or can_run(WorkerRow(capabilities={}), spec):
        return None  # built-ins run on every worker
    active = session.scalars(
        select(WorkerRow).where(WorkerRow.state == "active", WorkerRow.last_seen_at >= seen_since)
    )
    if any(can_run(worker, spec) for worker in active):
        return None
    workload = spec.workload
    return (
        f"waiting: no active worker can run model '{workload.model}' "
        f"with dataset '{workload.dataset}'"
    )


def worker_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(WorkerRow.id, WorkerRow.name).where(WorkerRow.id.in_(wanted)))
    return {worker_id: name for worker_id, name in rows}


class Studies:
    def __init__(
        self,
        db: Database,
        storage: RDBStorage,
        transitions: Transitions,
        artifacts: ArtifactStore,
        stale_worker_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.storage = storage
        self.transitions = transitions
        self.artifacts = artifacts
        # A worker unseen for longer does not count as able to run a study's plugins.
        self.stale_worker = timedelta(seconds=stale_worker_seconds)

    # -- creation ---------------------------------------------------------------------------

    def validate(self, document: dict[str, Any]) -> StudySpec:
        """Validate a spec document against built-in and worker-registered names.

        Raises pydantic.ValidationError (field + reason) or InvalidInput."""
        with self.db.read() as session:
            context = registered_names(session)
        return StudySpec.model_validate(document, context=context)

    def create(self, document: dict[str, Any]) -> StudyView:
        spec = self.validate(document)
        with self.db.read() as session:
            if session.scalar(select(StudyRow.id).where(StudyRow.name == spec.name)) is not None:
                raise Conflict(f"a study named '{spec.name}' already exists")
        optuna_id = search.create_study(self.storage, spec.name, spec)
        try:
            with unit_of_work(self.db) as unit:
                row = StudyRow(
                    name=spec.name,
                    spec=spec.model_dump(mode="json"),
                    state=StudyState.RUNNING.value,
                    optuna_study_id=optuna_id,
                    n_trials=0,
                    max_trials=spec.effective_max_trials(),
                    parallel_trials=spec.budget.parallel_trials,
                    created_at=utcnow(),
                )
                unit.session.add(row)
                unit.session.flush()
                unit.event(row.id, "study_state", state=row.state, reason=None)
        except IntegrityError as exc:
            raise Conflict(f"a study named '{spec.name}' already exists") from exc
        return self.get(row.id)

    # -- reading ----------------------------------------------------------------------------

    def list(self) -> list[StudyView]:
        with self.db.read() as session:
            rows = session.scalars(select(StudyRow).order_by(StudyRow.id.desc())).all()
            return [self._view(session, row) for row in rows]

    def get(self, study_id: int) -> StudyView:
        with self.db.read() as session:
            return self._view(session, self._study(session, study_id))

    def trials(self, study_id: int, limit: int = 100, after: int | None = None) -> TrialPage:
        """Trials by number; `after` is the cursor (a trial number) from the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.read() as session:
            self._study(session, study_id)
            query = select(TrialRow).where(TrialRow.study_id == study_id)
            if after is not None:
                query = query.where(TrialRow.number > after)
            rows = list(session.scalars(query.order_by(TrialRow.number).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            names = worker_names(session, {r.worker_id for r in rows})
        return TrialPage(rows, rows[-1].number if more else None, names)

    def trial(self, trial_id: int) -> TrialDetail:
        with self.db.read() as session:
            row = session.get(TrialRow, trial_id)
            if row is None:
                raise NotFound(f"trial {trial_id} not found")
            curve = list(
                session.scalars(
                    select(MetricRow)
                    .where(MetricRow.trial_id == trial_id)
                    .order_by(MetricRow.epoch)
                )
            )
            return TrialDetail(row, curve, worker_names(session, {row.worker_id}))

    # -- steering ---------------------------------------------------------------------------

    def stop(self, study_id: int) -> StudyView:
        """No new trials; running ones are told to pause at their next report."""
        with unit_of_work(self.db) as unit:
            study = self._study(unit.session, study_id, lock=True)
            if StudyState(study.state).is_finished():
                raise Conflict(f"study '{study.name}' is already {study.state}")
            if study.state != StudyState.STOPPED.value:
                study.state = StudyState.STOPPED.value
                unit.event(study.id, "study_state", state=study.state, reason=None)
        return self.get(study_id)

    def resume(self, study_id: int) -> StudyView:
        """A stopped study continues: trials paused half-way are queued to resume from their
        checkpoints; trials waiting at the end of a rung wait for the rung to be decided."""
        with unit_of_work(self.db) as unit:
            study = self._study(unit.session, study_id, lock=True)
            if StudyState(study.state).is_finished():
                raise Conflict(
                    f"study '{study.name}' is {study.state}; raise budget.max_trials with "
                    "PATCH to continue it"
                )
            if study.state == StudyState.STOPPED.value:
                study.state = StudyState.RUNNING.value
                spec = search.stored_spec(study.spec)
                paused = unit.session.scalars(
                    select(TrialRow).where(
                        TrialRow.study_id == study.id, TrialRow.state == TrialState.PAUSED.value
                    )
                )
                for trial in paused:
                    if trial.epochs < target_epochs(trial, spec):
                        self.transitions.release(unit, trial, TrialState.QUEUED)
                unit.event(study.id, "study_state", state=study.state, reason=None)
                unit.session.flush()
                self.transitions.advance_rungs(unit, study)
        return self.get(study_id)

    def patch_budget(
        self, study_id: int, max_trials: int | None, parallel_trials: int | None
    ) -> StudyView:
        """Change the budget; a completed study given more trials runs again, with the
        sampler's history (the Optuna study) intact."""
        with unit_of_work(self.db) as unit:
            study = self._study(unit.session, study_id, lock=True)
            spec = search.stored_spec(study.spec)
            if max_trials is not None:
                self._check_max_trials(spec, study, max_trials)
                study.max_trials = max_trials
                if StudyState(study.state).is_finished() and max_trials > study.n_trials:
                    study.state, study.finished_at, study.reason = "running", None, None
                    unit.event(study.id, "study_state", state=study.state, reason=None)
            if parallel_trials is not None:
                study.parallel_trials = parallel_trials
            budget = {
                **study.spec["budget"],
                "max_trials": study.max_trials,
                "parallel_trials": study.parallel_trials,
            }
            study.spec = {**study.spec, "budget": budget}
            self.transitions.settle(unit, study)
        return self.get(study_id)

    def delete(self, study_id: int) -> None:
        """Remove the study, its trials, curves and events, its Optuna study and checkpoints."""
        with unit_of_work(self.db) as unit:
            study = self._study(unit.session, study_id, lock=True)
            unit.later(search.delete_study, self.storage, study.optuna_study_id)
            unit.later(self.transitions.optuna.forget, study.optuna_study_id)
            checkpoints = unit.session.scalars(
                select(TrialRow.checkpoint_id).where(
                    TrialRow.study_id == study.id, TrialRow.checkpoint_id.is_not(None)
                )
            )
            for checkpoint in checkpoints:
                unit.later(self.artifacts.delete, checkpoint)
            unit.session.execute(delete(StudyRow).where(StudyRow.id == study.id))

    # -- helpers ----------------------------------------------------------------------------

    def _check_max_trials(self, spec: StudySpec, study: StudyRow, max_trials: int) -> None:
        if spec.strategy.is_multi_fidelity:
            raise InvalidInput(
                ("budget", "max_trials"),
                f"the trials of {spec.strategy.kind} follow from its brackets "
                f"({study.max_trials}); it cannot be given more",
            )
        if max_trials < study.n_trials:
            raise InvalidInput(
                ("budget", "max_trials"),
                f"max_trials {max_trials} is below the {study.n_trials} trials already created",
            )
        if spec.strategy.kind == "grid":
            size = grid_size(spec.space)
            if max_trials > size:
                raise InvalidInput(
                    ("budget", "max_trials"),
                    f"max_trials {max_trials} exceeds the grid's {size} points",
                )

    @staticmethod
    def _study(session: Session, study_id: int, lock: bool = False) -> StudyRow:
        query = select(StudyRow).where(StudyRow.id == study_id)
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"study {study_id} not found")
        return row

    def _view(self, session: Session, row: StudyRow) -> StudyView:
        waiting = waiting_reason(session, row, utcnow() - self.stale_worker)
        return StudyView(row, counts_by_state(session, row.id), best_trial(session, row), waiting)
