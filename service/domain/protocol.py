"""The worker protocol: register, lease, heartbeat, report, complete, fail, release, and the
reaper that takes trials back from workers that vanished.

Coordination lives in the database. A lease is a row's (token, expiry); every write checks the
token inside a write transaction, so a worker presumed dead cannot change a trial that was handed
to another (it gets StaleLease, 409).

This module holds what a worker says about a trial it leased: its reports, its end (complete,
fail, release) and its checkpoints. Registering, leasing, heartbeats and reaping live in
`service.domain.leasing`; the token checks and row locks both use, in `service.domain.lease_checks`.

Why `Protocol` subclasses `Leasing` rather than holding a leasing object and delegating to it:
both halves work on the same state (database, storage, settings, artifacts, transitions, and a
clock that tests replace on the object, `protocol.clock = ...`), and a report renews the lease
by the leasing half's span. A base class gives them one copy of that state; composition would
need it held twice and kept in step, plus six one-line methods forwarding to the leasing half.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from hpo.protocol import Decision, StudyState, TrialState
from service.domain import search
from service.domain.errors import NotFound, StorageFailed
from service.domain.lease_checks import decision_for_finished, leased, lock, require_running
from service.domain.leasing import Assignment, Leasing, can_run
from service.domain.spec import StudySpec
from service.domain.transitions import objective_of, target_epochs
from service.domain.unit import Unit, unit_of_work
from service.storage.artifacts import ArtifactError
from service.storage.models import MetricRow, StudyRow, TrialRow

# Assignment and can_run are imported from here by the API layer and study steering.
__all__ = ["Assignment", "Protocol", "can_run"]


class Protocol(Leasing):
    """The whole worker protocol: `Leasing`'s half, plus what a worker reports about a trial."""

    # The lease checks, as methods too: the code below reads as it did, and the class keeps them.
    _lock = staticmethod(lock)
    _leased = staticmethod(leased)
    _require_running = staticmethod(require_running)

    # -- while training ---------------------------------------------------------------------

    def report(
        self, worker_id: int, trial_id: int, token: str, epoch: int, metrics: dict[str, float]
    ) -> Decision:
        """Store one epoch's metrics and say whether to go on. Idempotent per (trial, epoch)."""
        with unit_of_work(self.db) as unit:
            now = self.clock()
            study, trial = self._lock(unit.session, trial_id, token)
            if trial.state != TrialState.RUNNING.value:
                return decision_for_finished(trial)
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
                return decision_for_finished(trial)
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
