"""Studies: create from a spec, look at them (counts, best, trials, curves), stop, resume, change
the budget, delete. Worker-facing operations live in `service.domain.protocol`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from optuna.storages import RDBStorage

from hpo.protocol import StudyState, TrialState, WorkerState
from service.domain import retention, search
from service.domain.errors import Conflict, InvalidInput, NotFound
from service.domain.pareto import pareto_front
from service.domain.spec import StudySpec, configuration_issues
from service.domain.spec.space import grid_size
from service.domain.transitions import Transitions, target_epochs
from service.domain.workers import can_run, is_stale
from service.storage.artifacts import ArtifactStore
from service.storage.db import Database
from service.storage.models import MetricRow, StudyRow, TrialRow, utcnow
from service.storage.studies import NameTaken
from service.storage.unit import Stores, reading, unit_of_work

MAX_PAGE = 1000


@dataclass(frozen=True)
class StudyView:
    row: StudyRow
    counts: dict[TrialState, int]
    best: TrialRow | None
    waiting: str | None = None  # why a running study gets no trials, when it is known
    front: list[TrialRow] | None = None  # multi-objective: the Pareto set, by trial number


@dataclass(frozen=True)
class TrialPageView:
    items: list[TrialRow]
    next: int | None
    workers: dict[int, str]


@dataclass(frozen=True)
class TrialDetailView:
    row: TrialRow
    curve: list[MetricRow]
    workers: dict[int, str]


def registered_names(stores: Stores) -> dict[str, Any]:
    """Plugin model / dataset names that some registered worker can run, and the tunables
    those workers' plugins declare (the spec's validation context)."""
    names: dict[str, set[str]] = {"models": set(), "datasets": set()}
    declared: list[dict[str, Any]] = []
    for caps in stores.workers.capabilities():
        for key in names:
            names[key].update(caps.get(key, []))
        declared += [t for t in caps.get("tunables", []) if t not in declared]
    return {**names, "tunables": declared}


def waiting_reason(
    stores: Stores, row: StudyRow, now: datetime, stale_after: timedelta
) -> str | None:
    """Why a running study that names a plugin model or dataset gets no trials: no active worker
    (registered, not gone, not stale) can run it. None when one can."""
    spec = search.stored_spec(row.spec)
    if row.state is not StudyState.RUNNING or can_run({}, spec):
        return None  # built-ins run on every worker
    active = [
        worker
        for worker in stores.workers.in_state(WorkerState.ACTIVE)
        if not is_stale(worker.state, worker.last_seen_at, now, stale_after)
    ]
    if any(can_run(worker.capabilities, spec) for worker in active):
        return None
    workload = spec.workload
    return (
        f"waiting: no active worker can run model '{workload.model}' "
        f"with dataset '{workload.dataset}'"
    )


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
        with reading(self.db) as stores:
            context = registered_names(stores)
        return StudySpec.model_validate(document, context=context)

    def create(self, document: dict[str, Any]) -> StudyView:
        spec = self.validate(document)
        with reading(self.db) as stores:
            if stores.studies.name_taken(spec.name):
                raise Conflict(f"a study named '{spec.name}' already exists")
        optuna_id = search.create_study(self.storage, spec.name, spec)
        search.enqueue(self.storage, spec.name, spec, spec.initial)
        try:
            with unit_of_work(self.db) as unit:
                row = unit.studies.create(
                    spec.name,
                    spec.model_dump(mode="json"),
                    optuna_id,
                    max_trials=spec.effective_max_trials(),
                    parallel_trials=spec.budget.parallel_trials,
                    created_at=utcnow(),
                )
                unit.event(row.id, "study_state", state=row.state.value, reason=None)
        except NameTaken as exc:
            raise Conflict(f"a study named '{spec.name}' already exists") from exc
        return self.get(row.id)

    # -- reading ----------------------------------------------------------------------------

    def list(self) -> list[StudyView]:
        with reading(self.db) as stores:
            return [self._view(stores, row) for row in stores.studies.newest_first()]

    def get(self, study_id: int) -> StudyView:
        with reading(self.db) as stores:
            return self._view(stores, _found(stores.studies.get(study_id), study_id))

    def trials(self, study_id: int, limit: int = 100, after: int | None = None) -> TrialPageView:
        """Trials by number; `after` is the cursor (a trial number) from the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        with reading(self.db) as stores:
            _found(stores.studies.get(study_id), study_id)
            rows = stores.trials.page(study_id, after, limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            names = stores.workers.names({r.worker_id for r in rows})
        return TrialPageView(rows, rows[-1].number if more else None, names)

    def trial(self, trial_id: int) -> TrialDetailView:
        with reading(self.db) as stores:
            row = stores.trials.get(trial_id)
            if row is None:
                raise NotFound(f"trial {trial_id} not found")
            curve = stores.curves.of_trial(trial_id)
            return TrialDetailView(row, curve, stores.workers.names({row.worker_id}))

    # -- steering ---------------------------------------------------------------------------

    def stop(self, study_id: int) -> StudyView:
        """No new trials; running ones are told to pause at their next report."""
        with unit_of_work(self.db) as unit:
            study = _found(unit.studies.lock(study_id), study_id)
            if study.state.is_finished():
                raise Conflict(f"study '{study.name}' is already {study.state.value}")
            if study.state is not StudyState.STOPPED:
                study.state = StudyState.STOPPED
                unit.event(study.id, "study_state", state=study.state.value, reason=None)
        return self.get(study_id)

    def resume(self, study_id: int) -> StudyView:
        """A stopped study continues: trials paused half-way are queued to resume from their
        checkpoints; trials waiting at the end of a rung wait for the rung to be decided."""
        with unit_of_work(self.db) as unit:
            study = _found(unit.studies.lock(study_id), study_id)
            if study.state.is_finished():
                raise Conflict(
                    f"study '{study.name}' is {study.state.value}; raise budget.max_trials with "
                    "PATCH to continue it"
                )
            if study.state is StudyState.STOPPED:
                study.state = StudyState.RUNNING
                spec = search.stored_spec(study.spec)
                for trial in unit.trials.of_study(study.id, TrialState.PAUSED):
                    if trial.epochs < target_epochs(trial, spec):
                        self.transitions.release(unit, trial, TrialState.QUEUED)
                unit.event(study.id, "study_state", state=study.state.value, reason=None)
                unit.flush()
                self.transitions.advance_rungs(unit, study)
        return self.get(study_id)

    def patch_budget(
        self, study_id: int, max_trials: int | None, parallel_trials: int | None
    ) -> StudyView:
        """Change the budget; a completed study given more trials runs again, with the
        sampler's history (the Optuna study) intact."""
        with unit_of_work(self.db) as unit:
            study = _found(unit.studies.lock(study_id), study_id)
            spec = search.stored_spec(study.spec)
            if max_trials is not None:
                self._check_max_trials(spec, study, max_trials)
                study.max_trials = max_trials
                if study.state.is_finished() and max_trials > study.n_trials:
                    study.state, study.finished_at, study.reason = StudyState.RUNNING, None, None
                    unit.event(study.id, "study_state", state=study.state.value, reason=None)
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

    def add_initial(self, study_id: int, initial: Sequence[dict[str, Any]]) -> StudyView:
        """Warm start a study that exists: `initial`'s configurations run before the
        sampler's next choices, in order. Raises InvalidInput naming the configuration's field
        (`initial.0.lr`) when one is not a configuration of the study's space."""
        with unit_of_work(self.db) as unit:
            study = _found(unit.studies.lock(study_id), study_id)
            spec = search.stored_spec(study.spec)
            if spec.strategy.kind == "grid":
                raise InvalidInput(("initial",), "grid search tries every point of its grid")
            for i, configuration in enumerate(initial):
                for issue in configuration_issues(spec.space, configuration, ("initial", i)):
                    raise InvalidInput(issue.loc, issue.msg)
            study.spec = {**study.spec, "initial": [*spec.initial, *initial]}
            unit.later(search.enqueue, self.storage, study.name, spec, initial)
        return self.get(study_id)

    def delete(self, study_id: int) -> None:
        """Remove the study, its trials, curves and events, its Optuna study, checkpoints and
        kept models."""
        with unit_of_work(self.db) as unit:
            study = _found(unit.studies.lock(study_id), study_id)
            unit.later(search.delete_study, self.storage, study.optuna_study_id)
            unit.later(self.transitions.optuna.forget, study.optuna_study_id)
            for checkpoint in unit.trials.checkpoint_ids(study.id):
                unit.later(self.artifacts.delete, checkpoint)
            retention.delete_models(unit, study.id, self.artifacts)
            unit.studies.delete(study.id)

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
        distinct = spec.distinct_configurations()
        if distinct is not None and max_trials > distinct:
            raise InvalidInput(
                ("budget", "max_trials"),
                f"max_trials {max_trials} exceeds the space's {distinct} configurations, each "
                "tried once; strategy.allow_repeats lets a study try them again",
            )

    def _view(self, stores: Stores, row: StudyRow) -> StudyView:
        waiting = waiting_reason(stores, row, utcnow(), self.stale_worker)
        spec = search.stored_spec(row.spec)
        counts = stores.trials.count_by_state(row.id)
        if spec.is_multi_objective:
            completed = stores.trials.of_study(row.id, TrialState.COMPLETED)
            return StudyView(row, counts, None, waiting, pareto_trials(completed, spec))
        maximize = spec.objective.direction == "maximize"
        best = stores.trials.best_completed(row.id, maximize)
        return StudyView(row, counts, best, waiting)


def pareto_trials(trials: Sequence[TrialRow], spec: StudySpec) -> list[TrialRow]:
    """The Pareto set of a multi-objective study's `trials` (its completed ones, say), by trial
    number: those whose `values` no other trial's dominate. Trials without all their values
    (a NaN, a missing one) are left out."""
    directions = [o.direction for o in spec.all_objectives]
    valued = [t for t in trials if t.values is not None and len(t.values) == len(directions)]
    front = pareto_front([t.values or [] for t in valued], directions)
    return sorted((valued[i] for i in front), key=lambda t: t.number)


def _found(row: StudyRow | None, study_id: int) -> StudyRow:
    if row is None:
        raise NotFound(f"study {study_id} not found")
    return row
