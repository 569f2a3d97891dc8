"""The store contract: what each store promises, run against the stores themselves on SQLite
and PostgreSQL (as Optuna's StorageTestCase runs every storage through one suite)."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import OperationalError

from hpo.protocol import StudyState, TrialState, WorkerState
from service.storage import dialect
from service.storage.db import Database
from service.storage.models import EventRow, TrialRow
from service.storage.studies import NameTaken
from service.storage.unit import Stores, Unit, reading, unit_of_work

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SPEC: dict[str, Any] = {"objective": {"metric": "val_accuracy", "direction": "maximize"}}


def _study(unit: Unit, name: str = "s1", max_trials: int = 10) -> int:
    row = unit.studies.create(name, SPEC, 1, max_trials, 2, NOW)
    return row.id


def _trials(db: Database, study_id: int, states: list[TrialState]) -> list[int]:
    """Trials numbered 0.. of the study, in the given states."""
    with unit_of_work(db) as unit:
        rows = [unit.trials.create(study_id, n, 0, 0, None) for n in range(len(states))]
        for row, state in zip(rows, states, strict=True):
            row.state = state
        unit.flush()
        return [row.id for row in rows]


# -- state columns ----------------------------------------------------------------------------


def test_states_are_enums_in_python_and_the_same_strings_in_the_database(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
        worker = unit.workers.create("w", "h", 1, "cpu", {}, NOW)
    _trials(db, study_id, [TrialState.PAUSED])
    with reading(db) as stores:
        study = stores.studies.get(study_id)
        assert study is not None and study.state is StudyState.RUNNING
        (trial,) = stores.trials.of_study(study_id)
        assert trial.state is TrialState.PAUSED
        found = stores.workers.get(worker.id)
        assert found is not None and found.state is WorkerState.ACTIVE
    with db.engine.connect() as conn:  # what a migration, a backup or a SQL user sees
        raw = conn.execute(text("SELECT state FROM hpo_trials")).scalar()
        assert raw == "paused"
        assert conn.execute(text("SELECT state FROM hpo_studies")).scalar() == "running"
        assert conn.execute(text("SELECT state FROM hpo_workers")).scalar() == "active"


def test_a_state_outside_the_enum_never_reaches_the_database(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    error = "'sleeping' is not a valid TrialState"
    with pytest.raises(Exception, match=error), unit_of_work(db) as unit:
        trial = unit.trials.create(study_id, 0, 0, 0, None)
        trial.state = "sleeping"  # type: ignore[assignment]
        unit.flush()
    with reading(db) as stores:
        assert stores.trials.of_study(study_id) == []


# -- studies ----------------------------------------------------------------------------------


def test_a_second_study_of_the_same_name_is_refused(db: Database) -> None:
    with unit_of_work(db) as unit:
        first = _study(unit, "same")
    with pytest.raises(NameTaken), unit_of_work(db) as unit:
        _study(unit, "same")
    with reading(db) as stores:
        assert [s.id for s in stores.studies.newest_first()] == [first]
        assert stores.studies.name_taken("same") and not stores.studies.name_taken("other")


def test_studies_are_counted_by_state_and_listed_newest_first(db: Database) -> None:
    with unit_of_work(db) as unit:
        ids = [_study(unit, f"s{i}") for i in range(3)]
        stopped = unit.studies.lock(ids[1])
        assert stopped is not None
        stopped.state = StudyState.STOPPED
    with reading(db) as stores:
        assert [s.id for s in stores.studies.newest_first()] == ids[::-1]
        assert stores.studies.count_by_state() == {
            StudyState.RUNNING: 2,
            StudyState.COMPLETED: 0,
            StudyState.STOPPED: 1,
            StudyState.FAILED: 0,
        }
    with unit_of_work(db) as unit:
        assert [s.id for s in unit.studies.lock_running()] == [ids[0], ids[2]]


def test_deleting_a_study_removes_its_trials_curves_and_events(db: Database) -> None:
    with unit_of_work(db) as unit:
        gone, kept = _study(unit, "gone"), _study(unit, "kept")
    (trial,) = _trials(db, gone, [TrialState.RUNNING])
    (other,) = _trials(db, kept, [TrialState.RUNNING])
    with unit_of_work(db) as unit:
        for trial_id, study_id in ((trial, gone), (other, kept)):
            unit.curves.add(trial_id, 1, {"val_accuracy": 0.5}, NOW)
            unit.event(study_id, "trial_reported", trial_id, epoch=1)
    with unit_of_work(db) as unit:
        unit.studies.delete(gone)
    with reading(db) as stores:
        assert stores.studies.get(gone) is None and stores.trials.get(trial) is None
        assert not stores.curves.has(trial, 1) and stores.events.after(gone, 0, 10) == []
        assert stores.curves.has(other, 1) and len(stores.events.after(kept, 0, 10)) == 1


# -- trials -----------------------------------------------------------------------------------


def test_trials_are_counted_by_state_per_study_and_over_all(db: Database) -> None:
    with unit_of_work(db) as unit:
        a, b = _study(unit, "a"), _study(unit, "b")
    _trials(db, a, [TrialState.RUNNING, TrialState.COMPLETED, TrialState.COMPLETED])
    _trials(db, b, [TrialState.QUEUED])
    with reading(db) as stores:
        counts = stores.trials.count_by_state(a)
        assert counts[TrialState.COMPLETED] == 2 and counts[TrialState.RUNNING] == 1
        assert counts[TrialState.QUEUED] == 0 and len(counts) == len(TrialState)
        assert sorted(stores.trials.count_by_study_and_state()) == [
            ("a", TrialState.COMPLETED, 2),
            ("a", TrialState.RUNNING, 1),
            ("b", TrialState.QUEUED, 1),
        ]
        assert stores.trials.running_per_study() == {a: 1}
        assert stores.trials.count_running(a) == 1 and stores.trials.count_running(b) == 0


def test_best_completed_follows_the_direction_and_breaks_ties_by_number(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    done = TrialState.COMPLETED
    ids = _trials(db, study_id, [done, done, done, TrialState.PRUNED, done])
    with unit_of_work(db) as unit:
        for trial_id, value in zip(ids, (0.2, 0.9, 0.9, 5.0, math.nan), strict=True):
            row = unit.trials.get(trial_id)
            assert row is not None
            row.value = value  # NaN is stored as NULL and never the best
    with reading(db) as stores:
        best = stores.trials.best_completed(study_id, maximize=True)
        worst = stores.trials.best_completed(study_id, maximize=False)
    assert best is not None and best.number == 1
    assert worst is not None and worst.number == 0


def test_expired_and_unheard_leases_are_found_and_locked(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
        worker = unit.workers.create("w", "h", 1, "cpu", {}, NOW).id
    ids = _trials(db, study_id, [TrialState.RUNNING] * 3 + [TrialState.QUEUED])
    with unit_of_work(db) as unit:
        for trial_id, expires in zip(ids, (-5, 5, -1, -9), strict=True):
            row = unit.trials.get(trial_id)
            assert row is not None
            row.worker_id, row.lease_expires_at = worker, NOW + timedelta(seconds=expires)
    with reading(db) as stores:
        assert stores.trials.any_expired(NOW) and not stores.trials.any_expired(NOW - timedelta(1))
        assert stores.trials.count_leases(NOW) == (1, 2)  # the queued one holds no lease
        assert stores.trials.any_unheard(worker, held=ids[:2])
        assert not stores.trials.any_unheard(worker, held=ids[:3])
    with unit_of_work(db) as unit:
        assert [t.id for t in unit.trials.lock_expired(NOW)] == [ids[0], ids[2]]
        assert [t.id for t in unit.trials.lock_unheard(worker, held=[ids[0]])] == ids[1:3]


def test_take_queued_takes_the_lowest_number_and_skips_a_trial_another_lease_holds(
    db: Database,
) -> None:
    """Two leases at once never take the same queued trial: on PostgreSQL the second skips
    the row the first holds; on SQLite the second waits for the first to commit."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    ids = _trials(db, study_id, [TrialState.RUNNING, TrialState.QUEUED, TrialState.QUEUED])
    first_took = threading.Event()
    release = threading.Event()
    taken: list[int | None] = []

    def first() -> None:
        with unit_of_work(db) as unit:
            trial = unit.trials.take_queued(study_id)
            taken.append(trial.id if trial else None)
            if trial is not None:
                trial.state = TrialState.RUNNING
            unit.flush()
            first_took.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_took.wait(10)
    if db.engine.dialect.name == "sqlite":
        release.set()  # the writer lock serializes: the second lease waits for this one
        thread.join(10)
    with unit_of_work(db) as unit:
        second = unit.trials.take_queued(study_id)
        taken.append(second.id if second else None)
    release.set()
    thread.join(10)
    assert taken == ids[1:3]


def test_trials_are_paged_by_number(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    _trials(db, study_id, [TrialState.QUEUED] * 5)
    with reading(db) as stores:
        assert [t.number for t in stores.trials.page(study_id, None, 2)] == [0, 1]
        assert [t.number for t in stores.trials.page(study_id, 1, 10)] == [2, 3, 4]


def test_lock_for_report_answers_the_trial_and_its_study(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    (trial_id,) = _trials(db, study_id, [TrialState.RUNNING])
    with unit_of_work(db) as unit:
        found = unit.trials.lock_for_report(trial_id)
        assert found is not None
        study, trial = found
        assert (study.id, trial.id) == (study_id, trial_id)
        assert unit.trials.lock_for_report(trial_id + 1000) is None


def test_lock_for_reports_answers_each_trial_with_its_study_and_leaves_out_missing_ones(
    db: Database,
) -> None:
    with unit_of_work(db) as unit:
        first, second = _study(unit, "a"), _study(unit, "b")
    a1, a2 = _trials(db, first, [TrialState.RUNNING, TrialState.PAUSED])
    (b1,) = _trials(db, second, [TrialState.RUNNING])
    with unit_of_work(db) as unit:
        found = unit.trials.lock_for_reports([b1, a2, a1, b1 + 1000])
        assert {t: (s.id, r.id) for t, (s, r) in found.items()} == {
            a1: (first, a1),
            a2: (first, a2),
            b1: (second, b1),
        }
        assert found[a2][1].state is TrialState.PAUSED
        assert unit.trials.lock_for_reports([b1 + 1000]) == {}


def test_reports_share_their_study_and_an_exclusive_lock_waits_for_them(
    postgres_db: Database,
) -> None:
    """PostgreSQL: two batched reports of one study's trials hold the study row at once
    (`exclusive` refuses its spec: FOR SHARE), so neither waits for the other; a report that
    asks for it exclusively (a rung may end) waits for the first, as a stop or a lease does."""
    db = postgres_db  # SQLite's writer holds the whole file: one write transaction at a time
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    first_trial, second_trial = _trials(db, study_id, [TrialState.RUNNING] * 2)
    locked, release = threading.Event(), threading.Event()

    def first() -> None:
        with unit_of_work(db) as unit:
            unit.trials.lock_for_reports([first_trial], exclusive=lambda _spec: False)
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert locked.wait(10)

        def second(exclusive: bool) -> dict[int, Any]:
            with db.write() as session:
                session.execute(text("SET LOCAL lock_timeout = '500ms'"))
                return Stores(session).trials.lock_for_reports(
                    [second_trial], exclusive=lambda _spec: exclusive
                )

        assert list(second(exclusive=False)) == [second_trial]
        with pytest.raises(OperationalError, match="lock timeout"):
            second(exclusive=True)
    finally:
        release.set()
        thread.join(10)
    assert list(second(exclusive=True)) == [second_trial]


def test_a_curve_point_is_stored_once_and_a_repeat_keeps_the_first(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    (trial_id,) = _trials(db, study_id, [TrialState.RUNNING])
    with unit_of_work(db) as unit:
        assert unit.curves.add_once(trial_id, 1, {"val_accuracy": 0.5}, NOW) is True
        assert unit.curves.add_once(trial_id, 1, {"val_accuracy": 0.9}, NOW) is False
    with unit_of_work(db) as unit:
        assert unit.curves.add_once(trial_id, 1, {"val_accuracy": 0.7}, NOW) is False
        assert unit.curves.add_once(trial_id, 2, {"val_accuracy": math.nan}, NOW) is True
    with reading(db) as stores:
        curve = [(row.epoch, row.metrics) for row in stores.curves.of_trial(trial_id)]
    assert curve[0] == (1, {"val_accuracy": 0.5})
    assert curve[1][0] == 2 and math.isnan(curve[1][1]["val_accuracy"])


# -- curves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["val_loss", "NaNoscale", "Infinity_loss", 'say "hi"'])
def test_a_metric_is_read_by_its_name_beside_nan_and_infinite_values(
    db: Database, name: str
) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    ids = _trials(db, study_id, [TrialState.RUNNING, TrialState.RUNNING])
    reports = {
        ids[0]: [{name: 1.0, "other": math.nan}, {name: math.inf}],
        ids[1]: [{name: 3.0}, {"other": 2.0}],
    }
    with unit_of_work(db) as unit:
        for trial_id, metrics in reports.items():
            for epoch, values in enumerate(metrics, start=1):
                unit.curves.add(trial_id, epoch, values, NOW)
    with reading(db) as stores:
        pairs = stores.curves.member(study_id, None, name)
        only_first = stores.curves.member(study_id, [ids[0]], name)
    assert sorted(pairs, key=str) == sorted([(1, 1.0), (2, math.inf), (1, 3.0), (2, None)], key=str)
    assert sorted(only_first) == [(1, 1.0), (2, math.inf)]


def test_a_restarted_trial_forgets_the_reports_after_its_checkpoint(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    (trial_id,) = _trials(db, study_id, [TrialState.RUNNING])
    with unit_of_work(db) as unit:
        for epoch in (1, 2, 3):
            unit.curves.add(trial_id, epoch, {"val_accuracy": epoch / 10}, NOW)
    with unit_of_work(db) as unit:
        unit.curves.drop_after(trial_id, 1)
    with reading(db) as stores:
        assert [row.epoch for row in stores.curves.of_trial(trial_id)] == [1]
        assert stores.curves.at(trial_id, 1) == {"val_accuracy": 0.1}
        assert stores.curves.at(trial_id, 2) is None and not stores.curves.has(trial_id, 2)


# -- workers and events -----------------------------------------------------------------------


def test_workers_are_listed_named_and_filtered_by_state(db: Database) -> None:
    with unit_of_work(db) as unit:
        a = unit.workers.create("a", "h", 1, "cpu", {"models": ["m"]}, NOW).id
        b = unit.workers.create("b", "h", 2, "cuda:0", {}, NOW)
        b.state = WorkerState.GONE
    with reading(db) as stores:
        assert [w.name for w in stores.workers.all()] == ["a", "b"]
        assert [w.id for w in stores.workers.in_state(WorkerState.ACTIVE)] == [a]
        assert stores.workers.names({a, None}) == {a: "a"}
        assert {"models": ["m"]} in stores.workers.capabilities()


def test_many_curve_points_go_in_at_once_and_a_repeat_keeps_the_first(db: Database) -> None:
    """`add_new` (a batched report's curve points; on PostgreSQL one JSON record set):
    values, names and times come back as given, and only new (trial, epoch) pairs count."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    first, second = _trials(db, study_id, [TrialState.RUNNING] * 2)
    odd = {"val_accuracy": math.nan, "größe \u2713": math.inf, 'quote"back\\slash': -0.0}
    with unit_of_work(db) as unit:
        new = unit.curves.add_new(
            [(first, 1, odd), (second, 1, {"val_accuracy": 0.5}), (first, 2, {"x": 1e308})], NOW
        )
    assert new.keys() == {(first, 1), (second, 1), (first, 2)}
    with unit_of_work(db) as unit:
        later = NOW + timedelta(hours=1)
        again = unit.curves.add_new([(first, 1, {"x": 0.0}), (second, 2, {"x": 2.0})], later)
    assert again == {(second, 2): '{"x":2.0}'}  # the stored text, for its event
    with reading(db) as stores:
        points = stores.curves.of_trial(first)
        kept = stores.curves.of_trials([second])
    assert [(p.epoch, p.reported_at) for p in points] == [(1, NOW), (2, NOW)]
    stored = points[0].metrics
    assert math.isnan(stored["val_accuracy"]) and stored["größe \u2713"] == math.inf
    assert math.copysign(1.0, stored['quote"back\\slash']) == -1.0
    assert points[1].metrics == {"x": 1e308}
    assert kept == [(second, 1, {"val_accuracy": 0.5}), (second, 2, {"x": 2.0})]


def test_rows_written_together_are_stored_as_the_orm_stores_them(db: Database) -> None:
    """A batch's curve points, events and reported trials (on SQLite sent to the driver as
    tuples its columns' types converted) leave the same stored values as the ORM's own
    writes of the same values, so what SQL compares or reads (a lease's expiry against a
    time, a metric) finds no difference. An event that embeds a curve point's stored text
    (a batched report's metrics, encoded once) is stored as one given the metrics."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    together, alone, third = _trials(db, study_id, [TrialState.RUNNING] * 3)
    metrics = {"val_accuracy": math.nan, "x": 0.1, "größe \u2713": -math.inf}
    expiry = NOW + timedelta(seconds=30, microseconds=7)
    with unit_of_work(db) as unit:
        [stored_text] = unit.curves.add_new([(together, 1, metrics)], NOW).values()
        unit.curves.add(alone, 1, metrics, NOW)  # the ORM's own INSERT
        unit.event(study_id, "trial_reported", together, number=3, epoch=1, metrics=stored_text)
        unit.event(study_id, "trial_reported", third, number=3, epoch=1, metrics=metrics)
        unit.trials.session.add(
            EventRow(
                study_id=study_id,
                kind="trial_reported",
                trial_id=alone,
                payload={"number": 3, "epoch": 1, "metrics": metrics},
                created_at=NOW,
            )
        )
        for trial_id in (together, alone):
            row = unit.trials.get(trial_id)
            assert row is not None
            row.epochs, row.value, row.values = 1, math.nan, [0.5, math.nan]
            row.lease_expires_at = expiry
            if trial_id == alone:
                row.attempt = 2  # another change: the ORM's flush writes this one
    with db.read() as session:
        curves = session.execute(
            text("SELECT metrics, reported_at FROM hpo_trial_metrics ORDER BY trial_id")
        ).all()
        events = session.execute(text("SELECT payload FROM hpo_events ORDER BY trial_id")).all()
        trials = session.execute(
            text('SELECT epochs, value, "values", lease_expires_at FROM hpo_trials ORDER BY id')
        ).all()
    assert curves[0] == curves[1]
    assert events[0] == events[1] == events[2]
    assert trials[0] == trials[1] and trials[0][1] is None  # NaN is stored as NULL
    with reading(db) as stores:
        assert not stores.trials.any_expired(expiry)
        assert stores.trials.any_expired(expiry + timedelta(microseconds=1))
        [point] = stores.curves.of_trial(together)
    assert point.reported_at == NOW and point.metrics["x"] == 0.1


def test_more_curve_points_than_one_statement_takes_are_all_stored_once(db: Database) -> None:
    """A batch of more points than SQLite's multi-row INSERT takes at once (1000 rows) is
    stored whole, in order, and its repeat stores nothing and says so."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    [trial_id] = _trials(db, study_id, [TrialState.RUNNING])
    points = [(trial_id, epoch, {"x": float(epoch)}) for epoch in range(1, 2502)]
    with unit_of_work(db) as unit:
        assert unit.curves.add_new(points, NOW).keys() == {(t, e) for t, e, _m in points}
    with unit_of_work(db) as unit:
        again = unit.curves.add_new([*points[-5:], (trial_id, 2502, {"x": 0.5})], NOW)
        assert again.keys() == {(trial_id, 2502)}
    with reading(db) as stores:
        stored = stores.curves.of_trials([trial_id])
    assert [(e, m["x"]) for _t, e, m in stored] == [(e, float(e)) for e in range(1, 2502)] + [
        (2502, 0.5)
    ]


def test_reported_trials_are_written_in_one_update_and_other_changes_as_before(
    db: Database,
) -> None:
    """`write_progress` (at a unit's flush): the trials whose only changes are a report's
    (epochs, value, values, lease expiry) go out in one UPDATE, values as set (an infinite
    value included); a trial with another change (its state) is written whole, as before."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    ids = _trials(db, study_id, [TrialState.RUNNING] * 4)
    updates: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.replace('"', "").startswith("UPDATE hpo_trials "):
            updates.append(statement)

    event.listen(db.engine, "before_cursor_execute", executed)
    try:
        with unit_of_work(db) as unit:
            rows = [unit.trials.get(trial_id) for trial_id in ids]
            for n, row in enumerate(rows, 1):
                assert row is not None
                row.epochs, row.value, row.values = n, 0.1 * n, [0.1 * n, -1.0]
                row.lease_expires_at = NOW + timedelta(seconds=n)
            rows[1].value = math.inf  # type: ignore[union-attr]
            rows[3].state = TrialState.PAUSED  # type: ignore[union-attr]
    finally:
        event.remove(db.engine, "before_cursor_execute", executed)
    # The three reported trials together, then the paused one; none written twice.
    assert len(updates) == 2
    with reading(db) as stores:
        found = [stores.trials.get(trial_id) for trial_id in ids]
    assert [(t.epochs, t.lease_expires_at) for t in found if t] == [
        (n, NOW + timedelta(seconds=n)) for n in range(1, 5)
    ]
    assert [t.value for t in found if t] == [0.1, math.inf, 0.30000000000000004, 0.4]
    assert [t.values for t in found if t] == [[0.1 * n, -1.0] for n in range(1, 5)]
    assert [t.state for t in found if t] == [TrialState.RUNNING] * 3 + [TrialState.PAUSED]


def test_reported_trials_are_clean_once_written_and_a_later_change_still_goes_out(
    db: Database,
) -> None:
    """After `write_progress` its trials are clean (the unit's flush has nothing of theirs to
    look at, as after the ORM's own flush), and a change made to one afterwards, in the same
    transaction, is written by the next flush."""
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    ids = _trials(db, study_id, [TrialState.RUNNING] * 2)
    with unit_of_work(db) as unit:
        rows = [unit.trials.get(trial_id) for trial_id in ids]
        for row in rows:
            assert row is not None
            row.epochs, row.value = 3, 0.5
        unit.trials.write_progress()
        assert not any(inspect(row).modified for row in rows)
        assert not unit.trials.session.dirty
        rows[0].state = TrialState.PAUSED  # type: ignore[union-attr]
        rows[0].epochs = 4  # type: ignore[union-attr]
    with reading(db) as stores:
        found = [stores.trials.get(trial_id) for trial_id in ids]
    assert [(t.epochs, t.value, t.state) for t in found if t] == [
        (4, 0.5, TrialState.PAUSED),
        (3, 0.5, TrialState.RUNNING),
    ]


def test_trials_a_batch_holds_already_are_written_without_another_lock(
    postgres_db: Database,
) -> None:
    """PostgreSQL: a batched report's trials, locked in the lock order by `lock_for_reports`,
    are written with no second, ordered lock (they wait for no one: one statement less a
    batch); trials read without their lock (a heartbeat's) still get it."""
    db = postgres_db
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    first, second = _trials(db, study_id, [TrialState.RUNNING] * 2)
    statements: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.replace('"', "").split()))

    event.listen(db.engine, "before_cursor_execute", executed)
    try:
        with unit_of_work(db) as unit:
            locked = unit.trials.lock_for_reports([first], exclusive=lambda _spec: False)
            locked[first][1].epochs = 5
            start = len(statements)
        held_write = statements[start:]
        with unit_of_work(db) as unit:
            row = unit.trials.get(second)
            assert row is not None
            row.epochs = 6
            start = len(statements)
        plain_write = statements[start:]
    finally:
        event.remove(db.engine, "before_cursor_execute", executed)
    assert not [s for s in held_write if s.endswith("FOR UPDATE")]
    assert [s for s in held_write if s.startswith("UPDATE hpo_trials")]
    assert [s for s in plain_write if s.endswith("FOR UPDATE")]
    with reading(db) as stores:
        assert [t.epochs for t in map(stores.trials.get, (first, second)) if t] == [5, 6]


def test_rows_updated_together_are_locked_in_id_order_whatever_their_order(
    postgres_db: Database,
) -> None:
    """PostgreSQL: `dialect.update_rows` (a batch's trials, a heartbeat's) locks its rows in
    key order before its one UPDATE, whose join would take them in any order: a writer that
    waits for trial 1 holds no lock on trial 2 yet, so two writers of overlapping trials (a
    heartbeat and a batched report) cannot deadlock."""
    db = postgres_db  # SQLite's writer holds the whole file: one write transaction at a time
    with unit_of_work(db) as unit:
        study_id = _study(unit)
    first, second = _trials(db, study_id, [TrialState.RUNNING] * 2)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with unit_of_work(db) as unit:
            unit.trials.lock_for_reports([first], exclusive=lambda _spec: False)
            holding.set()
            release.wait(10)

    def writer() -> None:
        rows = [{"id": trial_id, "epochs": 7} for trial_id in (second, first)]
        with db.write() as session:
            dialect.update_rows(session, TrialRow.__table__, rows, "id")

    threads = [threading.Thread(target=holder), threading.Thread(target=writer)]
    threads[0].start()
    try:
        assert holding.wait(10)
        threads[1].start()
        time.sleep(0.5)  # the writer now waits for the first trial
        with db.write() as session:
            session.execute(text("SET LOCAL lock_timeout = '500ms'"))
            found = Stores(session).trials.lock_for_reports([second], exclusive=lambda _spec: False)
            assert list(found) == [second]  # not taken by the waiting writer
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    with reading(db) as stores:
        assert [stores.trials.get(t).epochs for t in (first, second)] == [7, 7]  # type: ignore[union-attr]


def test_events_are_read_in_order_after_an_id(db: Database) -> None:
    with unit_of_work(db) as unit:
        study_id = _study(unit)
        for epoch in range(5):
            unit.event(study_id, "trial_reported", None, epoch=epoch, value=math.nan)
    with reading(db) as stores:
        events = stores.events.after(study_id, 0, 3)
        last = stores.events.last_id(study_id)
        rest = stores.events.after(study_id, events[-1].id, 10)
        none = stores.events.last_id(study_id + 1)
    assert [e.payload["epoch"] for e in events + rest] == [0, 1, 2, 3, 4]
    assert math.isnan(events[0].payload["value"])
    assert last == rest[-1].id and none == 0
