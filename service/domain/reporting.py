"""The reporting part of the worker protocol: what a worker says about a trial it leased (its
epochs' metrics, its end: complete, fail, release) and its checkpoints.

Every write checks the lease token inside a write transaction after locking the trial, so a
worker presumed dead cannot change a trial that was handed to another (StaleLease, 409).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from hpo.protocol import Decision, StudyState, TrialState
from service.domain import search
from service.domain.context import ProtocolContext
from service.domain.errors import NotFound, StorageFailed
from service.domain.lease_checks import (
    decision_for_finished,
    held,
    held_with_study,
    require_running,
)
from service.domain.spec import StudySpec
from service.domain.transitions import objective_value, target_epochs
from service.storage.artifacts import ArtifactError
from service.storage.models import StudyRow, TrialRow
from service.storage.unit import Unit, reading, unit_of_work


def at_rung_end(trial: TrialRow, spec: StudySpec) -> bool:
    """The trial finished a rung of successive halving that is not the last one."""
    target = target_epochs(trial, spec)
    return trial.epochs >= target and target < spec.budget.epochs


class Reporting:
    def __init__(self, context: ProtocolContext) -> None:
        self.context = context

    def _locked(self, unit: Unit, trial_id: int, token: str) -> tuple[StudyRow, TrialRow]:
        found = unit.trials.lock_for_report(trial_id)
        return held_with_study(found, trial_id, token)

    # -- while training ---------------------------------------------------------------------

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> Decision:
        """Store one epoch's metrics and say whether to go on. Idempotent per (trial, epoch)."""
        transitions = self.context.transitions
        with unit_of_work(self.context.db) as unit:
            now = self.context.clock()
            study, trial = self._locked(unit, trial_id, token)
            if trial.state is not TrialState.RUNNING:
                return decision_for_finished(trial)
            trial.lease_expires_at = self.context.lease_until(now)
            if not unit.curves.has(trial.id, epoch):
                self._record(unit, study, trial, epoch, metrics, now)
            spec = search.stored_spec(study.spec)
            if at_rung_end(trial, spec):
                self._pause_for_promotion(unit, study, trial)
                return Decision.PAUSE
            if study.state is StudyState.STOPPED:
                transitions.release(unit, trial, TrialState.PAUSED)
                return Decision.PAUSE
            value = trial.value
            study_name, optuna_id = study.name, trial.optuna_trial_id
            optuna_study_id = study.optuna_study_id
        if value is None or optuna_id is None or optuna_study_id is None or epoch != trial.epochs:
            return Decision.CONTINUE
        pruned = search.report(
            transitions.optuna, study_name, optuna_study_id, spec, optuna_id, epoch, value
        )
        if not pruned:
            return Decision.CONTINUE
        return self._prune(trial_id, token, epoch)

    def _pause_for_promotion(self, unit: Unit, study: StudyRow, trial: TrialRow) -> None:
        self.context.transitions.release(unit, trial, TrialState.PAUSED)
        unit.flush()
        self.context.transitions.advance_rungs(unit, study)

    @staticmethod
    def _record(
        unit: Unit,
        study: StudyRow,
        trial: TrialRow,
        epoch: int,
        metrics: dict[str, float],
        now: datetime,
    ) -> None:
        unit.curves.add(trial.id, epoch, metrics, now)
        if epoch >= trial.epochs:
            trial.epochs = epoch
            trial.value = objective_value(metrics, study.spec["objective"]["metric"])
        unit.event(
            study.id, "trial_reported", trial.id, number=trial.number, epoch=epoch, metrics=metrics
        )

    def _prune(self, trial_id: int, token: str, epoch: int) -> Decision:
        with unit_of_work(self.context.db) as unit:
            _study, trial = self._locked(unit, trial_id, token)
            if trial.state is not TrialState.RUNNING:
                return decision_for_finished(trial)
            reason = f"pruned at epoch {epoch}"
            self.context.transitions.finish(unit, trial, TrialState.PRUNED, reason)
        return Decision.PRUNE

    # -- the trial's end --------------------------------------------------------------------

    def complete(self, trial_id: int, token: str) -> TrialRow:
        """The trial trained all its epochs; its value is the objective at its last report."""
        transitions = self.context.transitions
        with unit_of_work(self.context.db) as unit:
            study, trial = self._locked(unit, trial_id, token)
            if trial.state is TrialState.COMPLETED:
                return trial
            require_running(trial)
            metric = study.spec["objective"]["metric"]
            if at_rung_end(trial, search.stored_spec(study.spec)):
                self._pause_for_promotion(unit, study, trial)  # a rung's end, not the trial's
            elif trial.epochs == 0:
                transitions.finish(unit, trial, TrialState.FAILED, "the trial reported no epoch")
            elif trial.value is None or not math.isfinite(trial.value):
                transitions.finish(
                    unit,
                    trial,
                    TrialState.FAILED,
                    f"objective '{metric}' was not a finite number at the last report",
                )
            else:
                transitions.finish(unit, trial, TrialState.COMPLETED, None)
        return trial

    def fail(self, trial_id: int, token: str, reason: str) -> TrialRow:
        """The trial failed for a reason of its own (NaN loss, bad data): not retried."""
        with unit_of_work(self.context.db) as unit:
            _study, trial = self._locked(unit, trial_id, token)
            if trial.state is TrialState.FAILED:
                return trial
            require_running(trial)
            self.context.transitions.finish(
                unit, trial, TrialState.FAILED, reason[:2000] or "failed"
            )
        return trial

    def release(self, trial_id: int, token: str) -> TrialRow:
        """The worker gives the trial back unfinished (it is shutting down): queued again,
        not counted as a failed attempt."""
        with unit_of_work(self.context.db) as unit:
            _study, trial = self._locked(unit, trial_id, token)
            if trial.state is TrialState.RUNNING:
                self.context.transitions.release(unit, trial, TrialState.QUEUED)
        return trial

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(
        self, trial_id: int, token: str, epoch: int, chunks: Iterable[bytes]
    ) -> TrialRow:
        """Store the trial's checkpoint taken after `epoch`; the one before it is removed.

        Raises StaleLease when the trial is not this lease's, StorageFailed (and fails the
        trial with the reason) when the artifacts folder cannot take it."""
        artifacts = self.context.artifacts
        with reading(self.context.db) as stores:
            require_running(held(stores.trials.get(trial_id), trial_id, token))
        artifact = artifacts.new_id()
        try:
            artifacts.write(artifact, chunks)
        except ArtifactError as exc:
            with unit_of_work(self.context.db) as unit:
                _study, trial = self._locked(unit, trial_id, token)
                if trial.state is TrialState.RUNNING:
                    self.context.transitions.finish(
                        unit, trial, TrialState.FAILED, f"its checkpoint could not be stored: {exc}"
                    )
            raise StorageFailed(str(exc)) from exc
        try:
            with unit_of_work(self.context.db) as unit:
                _study, trial = self._locked(unit, trial_id, token)
                require_running(trial)
                unit.later(artifacts.delete, trial.checkpoint_id)
                trial.checkpoint_id, trial.checkpoint_epoch = artifact, epoch
        except Exception:
            artifacts.delete(artifact)
            raise
        return trial

    def checkpoint_path(self, trial_id: int, token: str, checkpoint_id: str) -> Path:
        """The file of the trial's current checkpoint, for the worker that leased it."""
        artifacts = self.context.artifacts
        with reading(self.context.db) as stores:
            trial = held(stores.trials.get(trial_id), trial_id, token)
            if not artifacts.valid_id(checkpoint_id) or checkpoint_id != trial.checkpoint_id:
                raise NotFound(f"trial {trial_id} has no checkpoint {checkpoint_id[:80]!r}")
        path = artifacts.path(checkpoint_id)
        if not path.is_file():
            raise NotFound(f"the checkpoint of trial {trial_id} is gone from the artifacts folder")
        return path
