"""Trial state changes and what hangs on them: Optuna's tell, the event log, the study settling,
and successive-halving rungs advancing. Shared by the worker protocol and study steering.

Every function runs inside a unit of work (one write transaction); Optuna calls are queued with
`unit.later` to run after the commit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from optuna.storages import RDBStorage

from hpo.protocol import StudyState, TrialState
from service.domain import retention, search
from service.domain.fidelity import Rung
from service.domain.spec import StudySpec
from service.storage.artifacts import ArtifactStore
from service.storage.models import StudyRow, TrialRow
from service.storage.unit import Unit


def objective_value(metrics: dict[str, Any], metric: str) -> float | None:
    """The objective in a report's metrics, or None when it is missing or not a number."""
    value = metrics.get(metric)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def record_objectives(
    trial: TrialRow, metrics: dict[str, Any] | None, spec: dict[str, Any]
) -> None:
    """Set the trial's objective from the metrics of its latest epoch (None: it has none): its
    `value`, or for a multi-objective study (the stored spec has `objectives`) its `values`, one
    per objective in the spec's order (NaN where the metric is missing), `value` staying null."""
    objectives = spec.get("objectives")
    if objectives is None:
        metric = spec["objective"]["metric"]
        trial.value = objective_value(metrics, metric) if metrics is not None else None
        return
    trial.value = None
    if metrics is None:
        trial.values = None
        return
    values = [objective_value(metrics, o["metric"]) for o in objectives]
    trial.values = [math.nan if v is None else v for v in values]


def target_epochs(trial: TrialRow, spec: StudySpec) -> int:
    """The epoch the trial's current lease trains to: its rung's end, or the full budget."""
    return trial.target_epochs or spec.budget.epochs


class Transitions:
    def __init__(
        self, storage: RDBStorage, artifacts: ArtifactStore, clock: Callable[[], datetime]
    ) -> None:
        self.storage = storage
        self.optuna = search.StudyCache(storage)
        self.artifacts = artifacts
        self.clock = clock

    def release(self, unit: Unit, trial: TrialRow, state: TrialState) -> None:
        """Take the trial off its worker. A paused trial keeps its token so that the worker's
        retried report still hears `pause`; a queued one drops it, so a zombie gets 409."""
        trial.state = state
        trial.lease_expires_at, trial.worker_id = None, None
        if state is not TrialState.PAUSED:
            trial.lease_token = None
        unit.event(
            trial.study_id,
            "trial_state",
            trial.id,
            number=trial.number,
            state=state.value,
            rung=trial.rung,
        )

    def restart(self, unit: Unit, trial: TrialRow, metric: str) -> None:
        """Prepare a trial that is handed out again: it resumes from its checkpoint (or from
        scratch without one), and the curve after that epoch is dropped, so that the new
        attempt's reports are not taken for repeats."""
        resume_at = trial.checkpoint_epoch if trial.checkpoint_id else 0
        if trial.checkpoint_id and not self.artifacts.exists(trial.checkpoint_id):
            trial.checkpoint_id, trial.checkpoint_epoch, resume_at = None, 0, 0
        retention.drop_model(unit, trial, self.artifacts)
        unit.curves.drop_after(trial.id, resume_at)
        trial.epochs, trial.value, trial.values = resume_at, None, None
        if resume_at:
            metrics = unit.curves.at(trial.id, resume_at)
            study = unit.studies.get(trial.study_id)
            spec = study.spec if study is not None else {"objective": {"metric": metric}}
            record_objectives(trial, metrics, spec)

    def finish(self, unit: Unit, trial: TrialRow, state: TrialState, reason: str | None) -> None:
        trial.state, trial.reason, trial.finished_at = state, reason, self.clock()
        trial.lease_expires_at = None
        study = unit.studies.get(trial.study_id)
        assert study is not None
        self.tell_optuna(unit, study, trial)
        unit.event(
            study.id,
            "trial_finished",
            trial.id,
            number=trial.number,
            state=state.value,
            value=trial.value,
            values=trial.values,
            reason=reason,
        )
        unit.flush()
        retention.prune_models(unit, study, trial, self.artifacts)
        self.settle(unit, study)

    def tell_optuna(self, unit: Unit, study: StudyRow, trial: TrialRow) -> None:
        """Queue, for after the commit, what Optuna hears of the finished `trial`: the curve
        its reports left out (see `_deferred_values`) and its end, in one Optuna transaction
        (`search.finish`, a no-op for an Optuna trial that has ended). Nothing for a trial
        without an Optuna trial."""
        if trial.optuna_trial_id is None:
            return
        curve = self._deferred_values(unit, study, trial)
        told = trial.value if trial.values is None else trial.values
        unit.later(search.finish, self.storage, trial.optuna_trial_id, trial.state, told, curve)

    def _deferred_values(
        self, unit: Unit, study: StudyRow, trial: TrialRow
    ) -> list[tuple[int, float]]:
        """The (epoch, objective) of each epoch the trial reported, for Optuna with its end
        (one transaction), when the study's reports left Optuna alone (no pruner reads them:
        `search.reads_each_value`), so that Optuna's storage (and its dashboard) holds every
        trial's curve; else none. A value already there (a rung's end) is written again."""
        if trial.epochs == 0 or study.spec.get("objectives") is not None:
            return []  # a multi-objective study's reports give Optuna no intermediate value
        if search.reads_each_value(search.stored_spec(study.spec)):
            return []
        metric = study.spec["objective"]["metric"]
        return [
            (epoch, value)
            for epoch, metrics in unit.curves.points_of(trial.id)
            if (value := objective_value(metrics, metric)) is not None
        ]

    def settle(self, unit: Unit, study: StudyRow) -> None:
        """Mark a running study completed (or failed, when no trial succeeded) once
        `max_trials` trials have finished. Call after any trial finishes; the study-wide count
        is read only once its last trial has been created."""
        if study.state is not StudyState.RUNNING or study.n_trials < study.max_trials:
            return  # trials are only created by leases (`n_trials`): fewer have finished
        counts = unit.trials.count_by_state(study.id)
        finished = sum(n for state, n in counts.items() if state.is_finished())
        if finished < study.max_trials:
            return
        ok = counts[TrialState.COMPLETED] + counts[TrialState.PRUNED] > 0
        study.state = StudyState.COMPLETED if ok else StudyState.FAILED
        study.reason = (
            search.stored_spec(study.spec).exhausted_note() if ok else "every trial failed"
        )
        study.finished_at = self.clock()
        unit.event(study.id, "study_state", state=study.state.value, reason=study.reason)

    # -- successive halving ---------------------------------------------------------------

    def advance_rungs(self, unit: Unit, study: StudyRow) -> None:
        """Decide every rung that is complete: its best 1/eta go on to the next rung (queued to
        resume from their checkpoints), the rest end `pruned`. A rung is complete when all its
        configurations exist and none is still training or stopped half-way."""
        spec = search.stored_spec(study.spec)
        if not spec.strategy.is_multi_fidelity:
            return
        trials = unit.trials.of_study(study.id)
        for position, bracket in enumerate(spec.brackets()):
            members = [t for t in trials if t.bracket == position]
            if len(members) < bracket.size:
                continue  # the first rung is not fully created yet
            for k, rung in enumerate(bracket.rungs[:-1]):
                in_rung = [t for t in members if t.rung == k]
                if any(self._busy(t, rung.epochs) for t in in_rung):
                    break
                waiting = [t for t in in_rung if t.state is TrialState.PAUSED]
                if waiting:
                    self._decide_rung(unit, spec, waiting, k, bracket.rungs[k + 1])

    @staticmethod
    def _busy(trial: TrialRow, rung_end: int) -> bool:
        if trial.state in (TrialState.RUNNING, TrialState.QUEUED):
            return True
        return trial.state is TrialState.PAUSED and trial.epochs < rung_end  # stopped mid-rung

    def _decide_rung(
        self, unit: Unit, spec: StudySpec, waiting: list[TrialRow], k: int, next_rung: Rung
    ) -> None:
        sign = -1.0 if spec.objective.direction == "maximize" else 1.0

        def rank(trial: TrialRow) -> tuple[bool, float, int]:
            bad = trial.value is None or math.isnan(trial.value)
            return (bad, 0.0 if bad else sign * (trial.value or 0.0), trial.number)

        ranked = sorted(waiting, key=rank)
        for trial in ranked[: next_rung.configs]:
            trial.rung, trial.target_epochs = k + 1, next_rung.epochs
            trial.state, trial.lease_token = TrialState.QUEUED, None
            unit.event(
                trial.study_id,
                "trial_promoted",
                trial.id,
                number=trial.number,
                rung=trial.rung,
                target_epochs=trial.target_epochs,
            )
        for trial in ranked[next_rung.configs :]:
            self.finish(
                unit,
                trial,
                TrialState.PRUNED,
                f"not among the best {next_rung.configs} of rung {k}",
            )
