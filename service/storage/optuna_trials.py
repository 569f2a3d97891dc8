"""Optuna's trial tables, written as Optuna's `RDBStorage` writes them, in fewer transactions:
a lease's trials and params (below), a batched report's values (`write_values`), a
finished trial's curve (`write_curve`) and its end with that curve (`finish_trial`); the
running trials of studies (`running_trials`) and ending one that no trial of the service names
(`end_orphan`).

Optuna's ask writes a new trial in one transaction, reads it back in a second (`Trial`'s
constructor: the trial and its five related tables) and each suggested param in a transaction
of its own. `SamplingStorage` stands between a study's sampler and Optuna's storage while the
service asks: it creates the trials of a lease as Optuna does, all in one transaction
(`reserve`), keeps the params and system attributes the sampler and `Trial` write for them in
memory (and shows them to every read that goes through it, so the sampler sees what it would
have read from the database), and `flush` writes those of every trial asked meanwhile in one
transaction. A trial's params therefore reach the database all together or not at all.

This is the one module that reaches into Optuna's private `_rdb` modules (its table models,
`_create_new_trial`, `_get_prepared_new_trial`, `_set_trial_intermediate_value_without_commit`,
its transaction helper), so that an Optuna that renames them fails the tests of this module
(`tests/service/storage/test_optuna_trials.py`, `test_deferred_values.py`), not a lease.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from collections.abc import Collection, Container, Iterator, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna import distributions as optuna_distributions
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def has_waiting_trial(storage: RDBStorage, study_id: int) -> bool:
    """Whether a trial of the study waits (enqueued, `WAITING`): one indexed query, where
    `Study.ask` reads every unfinished trial through its trial cache to find out."""
    with _create_scoped_session(storage.scoped_session) as session:
        return _waits(session, study_id)


def _waits(session: Any, study_id: int) -> bool:
    model = models.TrialModel
    query = select(model.trial_id).where(
        model.study_id == study_id, model.state == OptunaState.WAITING
    )
    return session.execute(query.limit(1)).first() is not None


def _create_running_trial(storage: RDBStorage, study_id: int) -> FrozenTrial:
    """A new running trial, created as `RDBStorage.create_new_trial` creates it (its number
    counted under the study's row lock), returned as the `FrozenTrial` Optuna builds from the
    row it inserted: what reading it back would give."""
    return storage._create_new_trial(study_id)


def _create_running_trials(
    storage: RDBStorage, study_id: int, count: int, unless_waiting: bool
) -> list[FrozenTrial] | None:
    """`count` new running trials in one transaction, each made by the steps of Optuna's
    `create_new_trial` (the study's row locked, the trial inserted, its number counted), as
    the `FrozenTrial`s `_create_running_trial` returns; with `unless_waiting`, None and no
    trial when one of the study waits (`has_waiting_trial`, in the same transaction)."""
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        if unless_waiting and _waits(session, study_id):
            return None
        rows = [storage._get_prepared_new_trial(study_id, None, session) for _ in range(count)]
        session.flush()
        return [_new_frozen_trial(row) for row in rows]


def _new_frozen_trial(row: Any) -> FrozenTrial:
    """What Optuna's `_create_new_trial` returns for the new trial `row` (a `TrialModel`)."""
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=None,
        datetime_start=row.datetime_start,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=row.trial_id,
    )


def write_sampled(
    storage: RDBStorage, trials: Sequence[FrozenTrial], known: dict[str, BaseDistribution]
) -> None:
    """Write the params and system attributes of running trials that have none stored yet, in
    one transaction, as Optuna's `set_trial_param` and `set_trial_system_attr` store them (the
    internal representation of the value and `distribution_to_json`; attributes as JSON).

    Each param's distribution is checked against the study's first one of that name, as Optuna
    checks it; `known` holds those already checked (filled here). Raises Optuna's
    `UpdateFinishedTrialError` for a finished trial and `ValueError` for an incompatible
    distribution, and then writes nothing."""
    if not trials:
        return
    ids = [trial._trial_id for trial in trials]
    with _create_scoped_session(storage.scoped_session) as session:
        rows = session.execute(
            select(models.TrialModel.trial_id, models.TrialModel.study_id, models.TrialModel.state)
            .where(models.TrialModel.trial_id.in_(ids))
        ).all()  # fmt: skip
        found = {row.trial_id: row for row in rows}
        params: list[dict[str, Any]] = []
        attrs: list[dict[str, Any]] = []
        for trial in trials:
            row = found.get(trial._trial_id)
            if row is None:
                raise KeyError(f"No trial with trial_id {trial._trial_id} exists.")
            storage.check_trial_is_updatable(trial._trial_id, row.state)
            for name, distribution in trial.distributions.items():
                previous = known.get(name) or _first_distribution(session, row.study_id, name)
                if previous is not None:
                    optuna_distributions.check_distribution_compatibility(previous, distribution)
                known.setdefault(name, previous or distribution)
                params.append(
                    {
                        "trial_id": trial._trial_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(trial.params[name]),
                        "distribution_json": optuna_distributions.distribution_to_json(
                            distribution
                        ),
                    }
                )
            attrs.extend(
                {"trial_id": trial._trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in trial.system_attrs.items()
            )
        if params:
            session.execute(insert(models.TrialParamModel), params)
        if attrs:
            session.execute(insert(models.TrialSystemAttributeModel), attrs)


def _first_distribution(session: Any, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution of the study's first stored param called `name` (Optuna's query)."""
    record = session.execute(
        select(models.TrialParamModel.distribution_json)
        .join(models.TrialModel)
        .where(models.TrialModel.study_id == study_id, models.TrialParamModel.param_name == name)
        .limit(1)
    ).first()
    return None if record is None else optuna_distributions.json_to_distribution(record[0])


def writes_values_together(storage: RDBStorage) -> bool:
    """Whether this Optuna has the private step `write_values` batches with (checked by a
    test, so an Optuna that renames it fails the test instead of writing value by value)."""
    return hasattr(storage, "_set_trial_intermediate_value_without_commit")


def write_values(storage: RDBStorage, values: Sequence[tuple[int, int, float]]) -> bool:
    """Record the objective of each (Optuna trial id, epoch, value) in one transaction,
    through the steps of Optuna's own `set_trial_intermediate_value` without its commit per
    value; the value of a trial that finished meanwhile is left out. False when nothing was
    written (rolled back: e.g. a retried report wrote one of them meanwhile, or two are of
    one trial and epoch), for the caller to write them one by one."""
    if not writes_values_together(storage):
        return False
    write = storage._set_trial_intermediate_value_without_commit
    try:
        with _create_scoped_session(storage.scoped_session) as session, session.no_autoflush:
            # No flush before each look-up: the values go out together at the commit.
            for optuna_trial_id, epoch, value in values:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    write(session, optuna_trial_id, epoch, value)
    except Exception:
        return False
    return True


def write_curve(
    storage: RDBStorage, optuna_trial_id: int, values: Sequence[tuple[int, float]]
) -> None:
    """Record the objective of each (epoch, value) of one trial in one transaction of three
    statements (the trial, its stored values, one insert of the missing ones; a stored one
    that differs is updated), stored as Optuna stores an intermediate value. A no-op when
    the trial has finished."""
    model = models.TrialIntermediateValueModel
    with _create_scoped_session(storage.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(optuna_trial_id, session)
        if trial.state.is_finished():
            return
        stored: dict[int, Any] = {
            int(row.step): row for row in model.where_trial_id(optuna_trial_id, session)
        }
        new = []
        for epoch, value in values:
            point = _intermediate_row(optuna_trial_id, epoch, value)
            number, kind = point["intermediate_value"], point["intermediate_value_type"]
            row = stored.get(epoch)
            if row is None:
                new.append(point)
            elif (row.intermediate_value, row.intermediate_value_type) != (number, kind):
                row.intermediate_value, row.intermediate_value_type = number, kind
        if new:
            session.bulk_insert_mappings(model, new)  # one executemany, no ids read back


def _intermediate_row(optuna_trial_id: int, epoch: int, value: float) -> dict[str, Any]:
    """The row of `trial_intermediate_values` Optuna stores for a trial's `value` at `epoch`."""
    to_stored = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    number, kind = to_stored(value)
    return {
        "trial_id": optuna_trial_id,
        "step": epoch,
        "intermediate_value": number,
        "intermediate_value_type": kind,
    }


# Each database's INSERT with its `on_conflict_do_update` (typed loosely: the two differ).
_UPSERTS: dict[str, Any] = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


@functools.cache
def _finish_statements(dialect: str) -> tuple[Any, Any, Any] | None:
    """`finish_trial`'s three statements for a database `dialect` (built once: an upsert's
    `excluded` alone costs more to build than the statement to run), None for one whose upsert
    is not known here."""
    upsert = _UPSERTS.get(dialect)
    if upsert is None:
        return None
    trials = models.TrialModel.__table__
    end = (
        update(trials)
        .where(
            trials.c.trial_id == bindparam("ended_id"),
            trials.c.state.in_([OptunaState.RUNNING, OptunaState.WAITING]),
        )
        .values(
            state=bindparam("ended_state", type_=trials.c.state.type),
            datetime_complete=bindparam("ended_at", type_=trials.c.datetime_complete.type),
        )
    )
    curve = upsert(models.TrialIntermediateValueModel.__table__)
    curve = curve.on_conflict_do_update(
        index_elements=["trial_id", "step"],
        set_={
            "intermediate_value": curve.excluded.intermediate_value,
            "intermediate_value_type": curve.excluded.intermediate_value_type,
        },
    )
    values = upsert(models.TrialValueModel.__table__)
    values = values.on_conflict_do_update(
        index_elements=["trial_id", "objective"],
        set_={"value": values.excluded.value, "value_type": values.excluded.value_type},
    )
    return end, curve, values


def finish_trial(
    storage: RDBStorage,
    optuna_trial_id: int,
    state: OptunaState,
    values: Sequence[float] | None,
    curve: Sequence[tuple[int, float]] = (),
) -> bool:
    """End the unfinished trial `optuna_trial_id` as `state` with its objective `values`, and
    record the objective of each (epoch, value) of `curve` (a stored one is overwritten), all
    in one transaction of at most three statements: what `write_curve` and Optuna's
    `set_trial_state_values` write in two transactions of seven. The state's update comes
    first, guarded by the trial being unfinished, so that of two ends only one writes.

    False when nothing was written: the trial is finished or missing (the caller then goes
    the way of `write_curve` and `set_trial_state_values`, a no-op for a finished trial and
    Optuna's KeyError for a missing one), or the database is neither SQLite nor PostgreSQL.
    The `values` must be finite (Optuna's `Study.tell` makes a trial with others FAIL)."""
    statements = _finish_statements(storage.engine.dialect.name)
    if statements is None:
        return False
    end, write_curve_values, write_values = statements
    ended_at = datetime.now()  # as Optuna stamps it
    with _create_scoped_session(storage.scoped_session) as session:
        ended = session.execute(
            end, {"ended_id": optuna_trial_id, "ended_state": state, "ended_at": ended_at}
        )
        if ended.rowcount != 1:  # type: ignore[attr-defined]
            return False
        if curve:
            points = [_intermediate_row(optuna_trial_id, e, value) for e, value in curve]
            session.execute(write_curve_values, points)
        if values:
            rows = []
            for objective, value in enumerate(values):
                number, value_kind = models.TrialValueModel.value_to_stored_repr(value)
                rows.append(
                    {
                        "trial_id": optuna_trial_id,
                        "objective": objective,
                        "value": number,
                        "value_type": value_kind,
                    }
                )
            session.execute(write_values, rows)
    return True


ORPHAN_ATTR = "hpo:orphaned"
"""The system attribute of an Optuna trial the service ended FAIL as an orphan: why."""


def running_trials(storage: RDBStorage, study_ids: Collection[int]) -> dict[int, list[int]]:
    """The ids of the running trials of the Optuna studies `study_ids`, by study, in one
    query (Optuna's index on the study id)."""
    if not study_ids:
        return {}
    model = models.TrialModel
    query = select(model.study_id, model.trial_id).where(
        model.study_id.in_(list(study_ids)), model.state == OptunaState.RUNNING
    )
    found: dict[int, list[int]] = {}
    with _create_scoped_session(storage.scoped_session) as session:
        for study_id, trial_id in session.execute(query.order_by(model.trial_id)):
            found.setdefault(study_id, []).append(trial_id)
    return found


def end_orphan(storage: RDBStorage, trial_id: int, reason: str) -> bool:
    """End the running trial `trial_id` FAIL, with `reason` in its system attribute
    `ORPHAN_ATTR`, through Optuna's own writes (the attribute first: a trial left running
    between the two is ended by the next call). False when it had finished meanwhile."""
    try:
        storage.set_trial_system_attr(trial_id, ORPHAN_ATTR, reason)
        return storage.set_trial_state_values(trial_id, OptunaState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


class SamplingStorage(BaseStorage):
    """A study's Optuna storage as its sampler sees it while the service asks: `inner` (the
    study's cached storage) for everything, except that the trials it creates are pending
    until `flush`. A pending trial's params and system attributes are kept here and shown by
    every read through this storage (`get_trial` answers it from memory: no read-back); any
    other write to a pending trial (its state, a user attribute, a value) first flushes.

    Used by one thread at a time (the study's sampling lock); between asks nothing is pending
    and it only passes calls on."""

    def __init__(self, inner: BaseStorage, backend: RDBStorage) -> None:
        self.inner = inner
        self.backend = backend
        self._pending: dict[int, FrozenTrial] = {}
        self._reserved: dict[int, FrozenTrial] = {}
        self._known: dict[str, BaseDistribution] = {}

    # -- trials created ahead -----------------------------------------------------------------

    def reserve(self, study_id: int, count: int, unless_waiting: bool = False) -> bool:
        """Create the study's next `count` trials now, in one transaction, for the next
        `create_new_trial` calls to hand out in order. Until handed out they are hidden from
        every read through this storage, so the sampler of each sees the study exactly as if
        it had just been created alone (the same trials, the same numbers); their
        `datetime_start` is this call's time. With `unless_waiting`, creates nothing and
        returns False when a trial of the study waits (enqueued: Optuna's ask takes it)."""
        trials = _create_running_trials(self.backend, study_id, count, unless_waiting)
        for trial in trials or []:
            self._reserved[trial._trial_id] = trial
        return trials is not None

    def release(self) -> None:
        """End `FAIL` the reserved trials no `create_new_trial` took (an ask that stopped
        early): running trials without params that no one would ever finish."""
        reserved, self._reserved = list(self._reserved), {}
        for trial_id in reserved:
            self.backend.set_trial_state_values(trial_id, OptunaState.FAIL)

    # -- the pending trials -------------------------------------------------------------------

    def pending(self) -> list[int]:
        """The ids of the trials created since the last `flush`, in creation order."""
        return list(self._pending)

    def flush(self) -> None:
        """Write the pending trials' params and system attributes in one transaction; they are
        no longer pending, even when the write fails (Optuna's error is raised; nothing of
        theirs was written)."""
        trials, self._pending = list(self._pending.values()), {}
        write_sampled(self.backend, trials, self._known)

    def abandon(self, trial_id: int) -> None:
        """Forget what was kept for a pending trial whose sampling failed, and end it `FAIL`
        with no params, which samplers ignore."""
        if self._pending.pop(trial_id, None) is not None:
            self.backend.set_trial_state_values(trial_id, OptunaState.FAIL)

    def forget(self) -> None:
        """Drop whatever is still pending or reserved (an ask that failed on its way out, e.g.
        on the database): it is not written, and the next ask starts clean."""
        self._pending, self._reserved = {}, {}

    def _flush_if_pending(self, trial_id: int) -> None:
        if trial_id in self._pending:
            self.flush()

    # -- what it changes ----------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:
            return self.inner.create_new_trial(study_id, template_trial)
        if self._reserved:
            trial_id = next(iter(self._reserved))
            trial = self._reserved.pop(trial_id)
        else:
            trial = _create_running_trial(self.backend, study_id)
        self._pending[trial._trial_id] = trial
        return trial._trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        trial = self._pending.get(trial_id)
        if trial is None:
            self.inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        if param_name in trial.distributions:  # the database's unique (trial, name) key
            raise ValueError(f"param {param_name!r} of trial {trial_id} is already set")
        # What reading the stored value back gives, as a read through Optuna's storage would.
        trial.params[param_name] = distribution.to_external_repr(param_value_internal)
        trial.distributions[param_name] = distribution

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        trial = self._pending.get(trial_id)
        if trial is None:
            self.inner.set_trial_system_attr(trial_id, key, value)
            return
        trial.system_attrs[key] = json.loads(json.dumps(value))  # as stored and read back

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = self._pending.get(trial_id)
        return copy.deepcopy(trial) if trial is not None else self.inner.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[OptunaState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self.inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if not self._pending and not self._reserved:
            return trials
        return list(self._as_asked(trials, deepcopy))

    def _as_asked(self, trials: list[FrozenTrial], deepcopy: bool) -> Iterator[FrozenTrial]:
        """The trials with the pending ones as kept here, and without the reserved ones."""
        for trial in trials:
            if trial._trial_id in self._reserved:
                continue
            kept = self._pending.get(trial._trial_id)
            if kept is None:
                yield trial
            else:
                yield copy.deepcopy(kept) if deepcopy else kept

    def set_trial_state_values(
        self, trial_id: int, state: OptunaState, values: Sequence[float] | None = None
    ) -> bool:
        self._flush_if_pending(trial_id)
        return self.inner.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._flush_if_pending(trial_id)
        self.inner.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._flush_if_pending(trial_id)
        self.inner.set_trial_user_attr(trial_id, key, value)

    # -- passed on ------------------------------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self.inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self.inner.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.inner.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.inner.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.inner.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.inner.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.inner.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.inner.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)


def sampling_storage(storage: RDBStorage) -> SamplingStorage:
    """The storage a cached `optuna.Study` of the service reads and writes through: Optuna's
    own trial cache over `storage` (what `optuna.Study` makes of an `RDBStorage`), with the
    service's pending trials on top."""
    return SamplingStorage(optuna.storages.get_storage(storage), storage)
