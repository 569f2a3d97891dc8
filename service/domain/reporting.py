"""The reporting part of the worker protocol: what a worker says about a trial it leased (its
epochs' metrics, its end: complete, fail, release) and its checkpoints.

Every write checks the lease token inside a write transaction after locking the trial, so a
worker presumed dead cannot change a trial that was handed to another (StaleLease, 409).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from hpo.protocol import Decision, StudyState, TrialReport, TrialState
from service.domain import search
from service.domain.context import ProtocolContext
from service.domain.errors import DomainError, NotFound, StorageFailed
from service.domain.lease_checks import (
    decision_for_finished,
    held,
    held_with_study,
    holds,
    require_running,
)
from service.domain.spec import StudySpec
from service.domain.transitions import record_objectives, target_epochs
from service.storage.artifacts import ArtifactError
from service.storage.models import StudyRow, TrialRow
from service.storage.unit import Unit, reading, unit_of_work


class _OptunaReport(NamedTuple):
    """What a report leaves for after its commit: Optuna's intermediate value, and the
    pruner's question."""

    trial_id: int
    token: str
    epoch: int
    value: float
    optuna_trial_id: int
    study_name: str
    optuna_study_id: int
    spec: StudySpec


def report_interval(spec: StudySpec, seconds: float) -> float:
    """The `report_interval` of a lease of `spec`'s trials: 0 when a pruner reads each
    reported value (every answer matters at once), else `seconds` (the server's setting):
    before a lease's last epoch, a report's answer can then only be continue, or pause for a
    stopped study (the rung's end, successive halving's pause, is the lease's last epoch)."""
    return 0.0 if search.reads_each_value(spec) else seconds


def at_rung_end(trial: TrialRow, spec: StudySpec) -> bool:
    """The trial finished a rung of successive halving that is not the last one."""
    target = target_epochs(trial, spec)
    return trial.epochs >= target and target < spec.budget.epochs


def _unfinished_objective(trial: TrialRow, spec: dict[str, Any]) -> str | None:
    """The first objective whose value at the trial's last report is missing or not finite."""
    objectives = spec.get("objectives") or [spec["objective"]]
    values = [trial.value] if spec.get("objectives") is None else (trial.values or [])
    for i, objective in enumerate(objectives):
        value = values[i] if i < len(values) else None
        if value is None or not math.isfinite(value):  # a NaN: the metric was missing
            return str(objective["metric"])
    return None


def _decides_rungs(spec: dict[str, Any]) -> bool:
    """Whether a report of the study's trials may end a rung (successive halving, Hyperband)
    and then decide it over the study's other trials: such a report holds the study row
    exclusively; the reports of other studies' trials share it, and so go on side by side
    (PostgreSQL; a stop or a lease of the study still waits for them)."""
    return search.stored_spec(spec).strategy.is_multi_fidelity


class Reporting:
    def __init__(self, context: ProtocolContext) -> None:
        self.context = context

    def _locked(self, unit: Unit, trial_id: int, token: str) -> tuple[StudyRow, TrialRow]:
        found = unit.trials.lock_for_report(trial_id)
        return held_with_study(found, trial_id, token)

    # -- while training ---------------------------------------------------------------------

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> Decision:
        """Store one epoch's metrics and say whether to go on. Idempotent per (trial, epoch).

        Raises NotFound (no such trial) or StaleLease (the token does not hold it)."""
        # The API checked the report already; the item is not validated again.
        item = TrialReport.model_construct(
            trial_id=trial_id, token=token, epoch=epoch, metrics=metrics
        )
        [outcome] = self.report_many([item])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def report_many(self, reports: Sequence[TrialReport]) -> list[Decision | DomainError]:
        """Store the epoch reports of several trials (a batched report) in one transaction
        for the service's tables, then Optuna's intermediate values, and say for each item,
        in order, whether its trial goes on: its Decision, or the NotFound / StaleLease that
        the item alone would have raised (such an item changes nothing; the others do).
        Every item is idempotent per (trial, epoch), as a single report is."""
        with unit_of_work(self.context.db) as unit:
            ids = {item.trial_id for item in reports}
            locked = unit.trials.lock_for_reports(ids, exclusive=_decides_rungs)
            outcomes, pending = self._record_reports(unit, reports, locked)
        return self._ask_pruner(outcomes, pending)

    def _record_reports(
        self,
        unit: Unit,
        reports: Sequence[TrialReport],
        locked: dict[int, tuple[StudyRow, TrialRow]],
    ) -> tuple[list[Decision | DomainError], list[tuple[int, _OptunaReport]]]:
        """`report_many` inside its transaction, on the `locked` trials: each item's outcome,
        and the Optuna reports (by the item's position) to make after the commit."""
        outcomes: list[Decision | DomainError] = []
        pending: list[tuple[int, _OptunaReport]] = []
        now = self.context.clock()
        until = self.context.lease_until(now)  # one expiry for the batch: converted once
        stored = self._store_curves(unit, reports, locked, now)
        # A stopped study pauses a trial at its last epoch in the batch (a worker that
        # held several epochs' reports sends them together): the epochs before it are
        # recorded, and its checkpoint, uploaded before the reports, is not past it.
        last = {item.trial_id: position for position, item in enumerate(reports)}
        # Each study's spec, parsed once for the batch, and whether its pruner reads each
        # value (asked once: it builds the study's pruner).
        specs: dict[int, tuple[StudySpec, bool]] = {}
        for position, item in enumerate(reports):
            try:
                study, trial = held_with_study(locked.get(item.trial_id), item.trial_id, item.token)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            known = specs.get(study.id)
            if known is None:
                spec = search.stored_spec(study.spec)
                known = specs[study.id] = (spec, search.reads_each_value(spec))
            is_last = last[item.trial_id] == position
            step = self._report_one(
                unit, study, known, trial, item, (now, until), stored.get(position), is_last
            )
            if isinstance(step, _OptunaReport):
                pending.append((len(outcomes), step))
                outcomes.append(Decision.CONTINUE)
            else:
                outcomes.append(step)
        return outcomes, pending

    def _ask_pruner(
        self, outcomes: list[Decision | DomainError], pending: list[tuple[int, _OptunaReport]]
    ) -> list[Decision | DomainError]:
        """After the reports' commit: Optuna's intermediate values of a study with a pruner,
        and its pruner's question; the outcomes with the trials it pruned ended."""
        transitions = self.context.transitions
        storage = transitions.optuna.storage
        search.report_values(storage, [(s.optuna_trial_id, s.epoch, s.value) for _, s in pending])
        pruned = [
            (position, step)
            for position, step in pending
            if search.should_prune(
                transitions.optuna,
                step.study_name,
                step.optuna_study_id,
                step.spec,
                step.optuna_trial_id,
                step.value,
            )
        ]
        if pruned:
            ends = self._prune([(step.trial_id, step.token, step.epoch) for _, step in pruned])
            for (position, _step), end in zip(pruned, ends, strict=True):
                outcomes[position] = end
        return outcomes

    @staticmethod
    def _store_curves(
        unit: Unit,
        reports: Sequence[TrialReport],
        locked: dict[int, tuple[StudyRow, TrialRow]],
        now: datetime,
    ) -> dict[int, tuple[bool, Any]]:
        """Store, in one statement and before any record changes (so that the trials' and
        events' writes then go out together at the commit), the curve points of the items of
        each held running trial up to the end of its lease's rung (several epochs of one trial
        when a worker sent held reports together; nothing inside the transaction ends a trial
        before that epoch: a stopped study pauses it at its last item, which is stored too);
        whether each was new, by the item's position. An item past its rung's end, or one not
        after the trial's earlier items' epochs, is stored in turn once the earlier ones'
        decisions are known (a pause at a rung's end stores nothing after it). Each stored
        item's metrics as its event carries them: the curve point's stored text (encoded
        once for both)."""
        chosen: dict[tuple[int, int], int] = {}
        last: dict[int, int] = {}  # each trial's last epoch chosen (rising epochs only)
        for position, item in enumerate(reports):
            found = locked.get(item.trial_id)
            if found is None or item.epoch <= last.get(item.trial_id, 0):
                continue
            study, trial = found
            limit = trial.target_epochs or study.spec["budget"]["epochs"]
            held_running = trial.state is TrialState.RUNNING and holds(trial, item.token)
            if held_running and item.epoch <= limit:
                chosen[(item.trial_id, item.epoch)] = position
                last[item.trial_id] = item.epoch
        items = [reports[position] for position in chosen.values()]
        new = unit.curves.add_new([(r.trial_id, r.epoch, r.metrics) for r in items], now)
        return {position: (key in new, new.get(key)) for key, position in chosen.items()}

    def _report_one(
        self,
        unit: Unit,
        study: StudyRow,
        known: tuple[StudySpec, bool],
        trial: TrialRow,
        item: TrialReport,
        times: tuple[datetime, datetime],
        stored: tuple[bool, Any] | None,
        last: bool = True,
    ) -> Decision | _OptunaReport:
        """One held trial's report inside the batch's transaction: its decision, or the
        Optuna report (and pruner question) to make after the commit. `known`: the study's
        spec and whether its pruner reads each value (`search.reads_each_value`). `times`:
        the batch's time and its trials' new lease expiry. `stored`: whether its
        curve point was new and the metrics its event carries, when `_store_curves` stored
        it already (None: not yet). `last`:
        the trial has no later item in the batch (only that one pauses for a stopped study)."""
        if trial.state is not TrialState.RUNNING:
            return decision_for_finished(trial)
        (spec, reads_each_value), (now, until) = known, times
        if stored is None:
            stored = (unit.curves.add_once(trial.id, item.epoch, item.metrics, now), None)
        new, as_stored = stored
        if new:
            self._recorded(unit, study, trial, item.epoch, item.metrics, as_stored)
        trial.lease_expires_at = until
        if at_rung_end(trial, spec):
            self._record_before_pause(unit, trial, item.epoch)
            self._pause_for_promotion(unit, study, trial)
            return Decision.PAUSE
        if study.state is StudyState.STOPPED and last:
            self._record_before_pause(unit, trial, item.epoch)
            self.context.transitions.release(unit, trial, TrialState.PAUSED)
            return Decision.PAUSE
        if not reads_each_value:
            return Decision.CONTINUE  # nothing reads it now: Optuna gets it at the trial's end
        value, optuna_id = trial.value, trial.optuna_trial_id
        if (
            value is None
            or optuna_id is None
            or study.optuna_study_id is None
            or item.epoch != trial.epochs
        ):
            return Decision.CONTINUE
        return _OptunaReport(
            trial.id,
            item.token,
            item.epoch,
            value,
            optuna_id,
            study.name,
            study.optuna_study_id,
            spec,
        )

    def _record_before_pause(self, unit: Unit, trial: TrialRow, epoch: int) -> None:
        """Give Optuna the value of the epoch a trial pauses at (a rung's end, a stopped
        study), as every other epoch's: the sampler (TPE, BOHB-like hyperband) learns from it.
        Queued before the pause's own after-commit calls, so it lands before a prune's tell."""
        if trial.optuna_trial_id is not None and trial.value is not None and epoch == trial.epochs:
            storage = self.context.transitions.optuna.storage
            unit.later(search.record_value, storage, trial.optuna_trial_id, epoch, trial.value)

    def _pause_for_promotion(self, unit: Unit, study: StudyRow, trial: TrialRow) -> None:
        self.context.transitions.release(unit, trial, TrialState.PAUSED)
        unit.flush()
        self.context.transitions.advance_rungs(unit, study)

    @staticmethod
    def _recorded(
        unit: Unit,
        study: StudyRow,
        trial: TrialRow,
        epoch: int,
        metrics: dict[str, float],
        as_stored: Any = None,
    ) -> None:
        """What follows a newly stored epoch: the trial's latest value, and the event, whose
        metrics are `as_stored` (the curve point's stored text) when given."""
        if epoch >= trial.epochs:
            trial.epochs = epoch
            record_objectives(trial, metrics, study.spec)
        shown = metrics if as_stored is None else as_stored
        unit.event(
            study.id, "trial_reported", trial.id, number=trial.number, epoch=epoch, metrics=shown
        )

    def _prune(self, trials: list[tuple[int, str, int]]) -> list[Decision | DomainError]:
        """End the (trial id, token, epoch) trials the pruner gave up on, in one transaction;
        for each, in order, `prune`, what it ended as meanwhile, or the StaleLease / NotFound
        of a trial handed to another worker since the report."""
        ends: list[Decision | DomainError] = []
        with unit_of_work(self.context.db) as unit:
            locked = unit.trials.lock_for_reports({trial_id for trial_id, _t, _e in trials})
            for trial_id, token, epoch in trials:
                try:
                    _study, trial = held_with_study(locked.get(trial_id), trial_id, token)
                except DomainError as exc:
                    ends.append(exc)
                    continue
                if trial.state is not TrialState.RUNNING:
                    ends.append(decision_for_finished(trial))
                    continue
                reason = f"pruned at epoch {epoch}"
                self.context.transitions.finish(unit, trial, TrialState.PRUNED, reason)
                ends.append(Decision.PRUNE)
        return ends

    # -- the trial's end --------------------------------------------------------------------

    def complete(
        self,
        trial_id: int,
        token: str,
        test_metrics: dict[str, Any] | None = None,
        reports: Sequence[tuple[int, dict[str, float]]] = (),
    ) -> TrialRow:
        """The trial trained all its epochs; its value is the objective at its last report.
        `test_metrics` (its final model on the held-out test split) is stored on a trial that
        completes, as it is: nothing here or later selects, prunes or orders by it.

        `reports`: its last (epoch, metrics), recorded first exactly as `report_many` records
        them (idempotent per epoch). When their answer ends the trial (a pruner's `prune`, a
        stopped study's or a rung's `pause`) that answer wins: the trial is returned as it
        left it (pruned, paused), not completed, and `test_metrics` is not stored. Raises
        NotFound or StaleLease as a report or the completion alone would.

        One transaction records the reports and completes the trial, unless its study has a
        pruner (which is asked about the reports' values after their commit, as for a report):
        then the completion follows in a transaction of its own."""
        items = [
            TrialReport.model_construct(trial_id=trial_id, token=token, epoch=e, metrics=m)
            for e, m in reports
        ]
        with unit_of_work(self.context.db) as unit:
            found = unit.trials.lock_for_report(trial_id)  # whole rows: the answer shows them
            locked = {trial_id: found} if found is not None else {}
            outcomes, pending = self._record_reports(unit, items, locked) if items else ([], [])
            for outcome in outcomes:
                if isinstance(outcome, DomainError):
                    raise outcome  # a stale token or a missing trial: nothing was written
            if not pending:
                study, trial = held_with_study(locked.get(trial_id), trial_id, token)
                if any(o in (Decision.PRUNE, Decision.PAUSE) for o in outcomes):
                    return trial  # the reports' answer ended it (a stopped study, a rung)
                return self._complete_locked(unit, study, trial, test_metrics)
        ended = self._final_reports(trial_id, self._ask_pruner(outcomes, pending))
        if ended is not None:
            return ended
        with unit_of_work(self.context.db) as unit:
            study, trial = self._locked(unit, trial_id, token)
            return self._complete_locked(unit, study, trial, test_metrics)

    def _complete_locked(
        self, unit: Unit, study: StudyRow, trial: TrialRow, test_metrics: dict[str, Any] | None
    ) -> TrialRow:
        """The completion of a held trial locked in `unit` (see `complete`)."""
        transitions = self.context.transitions
        if trial.state is TrialState.COMPLETED:
            return trial
        require_running(trial)
        unfinished = _unfinished_objective(trial, study.spec)
        if at_rung_end(trial, search.stored_spec(study.spec)):
            self._pause_for_promotion(unit, study, trial)  # a rung's end, not the trial's
        elif trial.epochs == 0:
            transitions.finish(unit, trial, TrialState.FAILED, "the trial reported no epoch")
        elif unfinished is not None:
            transitions.finish(
                unit,
                trial,
                TrialState.FAILED,
                f"objective '{unfinished}' was not a finite number at the last report",
            )
        else:
            trial.test_metrics = test_metrics
            transitions.finish(unit, trial, TrialState.COMPLETED, None)
        return trial

    def _final_reports(
        self, trial_id: int, outcomes: list[Decision | DomainError]
    ) -> TrialRow | None:
        """The trial when the answer to a completion's reports (its pruner's included) ended
        it, else None. `stop` (the trial ended before: a repeated completion) is left to the
        completion, which answers a completed trial again and refuses any other (StaleLease)."""
        for outcome in outcomes:
            if isinstance(outcome, DomainError):
                raise outcome
        if not any(o in (Decision.PRUNE, Decision.PAUSE) for o in outcomes):
            return None
        with reading(self.context.db) as stores:
            trial = stores.trials.get(trial_id)
        if trial is None:  # deleted since the report
            raise NotFound(f"trial {trial_id} not found (its study may have been deleted)")
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
