"""The lock order, written once: every store that locks rows goes through these functions.

The invariant every writer keeps so that two transactions cannot deadlock: study rows before
trial rows, and rows of one kind in id order. Trials that another transaction holds are skipped
where a caller can come back to them later (the reaper, the next queued trial); a report waits
for its own trial. On SQLite the writer's `BEGIN IMMEDIATE` already serializes every write, and
`FOR UPDATE` compiles to nothing.

One lock is not a row lock: `sampling`, a PostgreSQL advisory lock per Optuna study, held while
Optuna's sampler asks, which runs in Optuna's own transactions after ours committed (so it
holds no row lock of ours and cannot close a cycle with them).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, bindparam, select, text
from sqlalchemy.orm import Session, defer

from service.storage import dialect
from service.storage.models import StudyRow, TrialRow


def study(session: Session, study_id: int) -> StudyRow | None:
    """The study, row-locked."""
    return session.scalars(
        select(StudyRow).where(StudyRow.id == study_id).with_for_update()
    ).first()


def studies(session: Session, where: ColumnElement[bool]) -> list[StudyRow]:
    """The studies matching `where`, row-locked in id order."""
    query = select(StudyRow).where(where).order_by(StudyRow.id).with_for_update()
    return list(session.scalars(query))


def trial_with_study(session: Session, trial_id: int) -> None:
    """Lock the trial's study, then the trial (a no-op on SQLite, and for a missing trial)."""
    if not dialect.locks_rows(session):
        return
    study_id = session.scalar(select(TrialRow.study_id).where(TrialRow.id == trial_id))
    if study_id is None:
        return
    study(session, study_id)
    session.scalars(select(TrialRow).where(TrialRow.id == trial_id).with_for_update()).first()


def named_trials_with_studies(
    session: Session,
    trial_ids: Collection[int],
    exclusive: Callable[[dict[str, Any]], bool] = lambda _spec: True,
) -> list[tuple[StudyRow, TrialRow]]:
    """The trials `trial_ids` that exist, each with its study, row-locked studies first, then
    trials, each kind in id order, waiting for other holders. A study whose spec `exclusive`
    refuses is locked for share (`FOR SHARE`): several such transactions hold it at once
    (batched reports of one study's trials do not queue behind each other), while a writer of
    the study row (stop, a lease, a rung's decision) waits for them and they for it; a
    transaction that may change the study or decide over its other trials must ask for an
    exclusive lock here, since a share lock cannot be raised later without risking a
    deadlock. Each study is locked in its own statement, so the order stays by id whatever
    the modes. On SQLite, where the writer holds everything already, the trials are read in
    one SELECT and their studies in another (one joined SELECT parsed the study's spec once
    per trial)."""
    ids = {"ids": list(trial_ids)}
    if not dialect.locks_rows(session):
        rows = list(session.scalars(_NAMED_TRIALS, ids))
        if not rows:
            return []
        study_ids = {"ids": list({trial.study_id for trial in rows})}
        by_id = {study.id: study for study in session.scalars(_STUDIES, study_ids)}
        return [(by_id[trial.study_id], trial) for trial in rows]
    specs = session.execute(_SPECS_OF_TRIALS, ids).all()
    if not specs:
        return []
    studies: dict[int, StudyRow] = {}
    for study_id, spec in specs:
        lock = _STUDY_EXCLUSIVE if exclusive(spec) else _STUDY_SHARED
        locked = session.scalars(lock, {"id": study_id}).first()
        if locked is not None:  # deleted meanwhile: its trials went with it
            studies[study_id] = locked
    locked_rows = list(session.scalars(_NAMED_TRIALS_LOCKED, ids))
    held_trials(session).update(t.id for t in locked_rows)
    return [(studies[t.study_id], t) for t in locked_rows if t.study_id in studies]


def held_trials(session: Session) -> set[int]:
    """The ids of the trials this session's transaction has locked `FOR UPDATE` through
    `named_trials_with_studies` (a session is one write transaction, `Database.write`): a
    write of only these rows takes no lock it does not hold, so it needs no ordered lock."""
    held: set[int] = session.info.setdefault(_HELD_TRIALS, set())
    return held


_HELD_TRIALS = "hpo_held_trials"


# The statements of `named_trials_with_studies`, built once (a batched report of 8 spent as
# long building and keying them as running them); the trials' params, reason and test
# metrics (JSON and text a report does not read) load only if touched.
_NAMED_TRIALS = (
    select(TrialRow)
    .where(TrialRow.id.in_(bindparam("ids", expanding=True)))
    .options(defer(TrialRow.params), defer(TrialRow.test_metrics), defer(TrialRow.reason))
)
_NAMED_TRIALS_LOCKED = _NAMED_TRIALS.order_by(TrialRow.id).with_for_update()
_STUDIES = select(StudyRow).where(StudyRow.id.in_(bindparam("ids", expanding=True)))
_SPECS_OF_TRIALS = (
    select(StudyRow.id, StudyRow.spec)
    .where(
        StudyRow.id.in_(
            select(TrialRow.study_id).where(TrialRow.id.in_(bindparam("ids", expanding=True)))
        )
    )
    .order_by(StudyRow.id)
)
_STUDY = select(StudyRow).where(StudyRow.id == bindparam("id"))
_STUDY_SHARED = _STUDY.with_for_update(read=True)
_STUDY_EXCLUSIVE = _STUDY.with_for_update()


def trials_with_studies(session: Session, where: ColumnElement[bool]) -> list[TrialRow]:
    """The trials matching `where`, row-locked after their studies (both in id order); a trial
    another transaction holds is skipped, and one that stopped matching meanwhile too."""
    found = session.execute(select(TrialRow.id, TrialRow.study_id).where(where))
    ids: set[int] = set()
    study_ids: set[int] = set()
    for trial_id, study_id in found:
        ids.add(trial_id)
        study_ids.add(study_id)
    if not ids:
        return []
    _studies_by_id(session, study_ids)
    query = (
        select(TrialRow)
        .where(TrialRow.id.in_(ids), where)
        .order_by(TrialRow.id)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def first_free_trial(session: Session, where: ColumnElement[bool]) -> TrialRow | None:
    """The lowest-numbered trial matching `where` that no other transaction holds, locked.
    The caller holds the trial's study already."""
    query = (
        select(TrialRow)
        .where(where)
        .order_by(TrialRow.number)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).first()


# The first key of `sampling`'s two-key advisory locks (the bytes of "hpo!"; the second key is
# the Optuna study id). Two-key locks never clash with the migrations' one-key lock.
SAMPLING_LOCK_SPACE = int.from_bytes(b"hpo!", "big", signed=True)


@contextmanager
def sampling(optuna_storage: Any, optuna_study_id: int) -> Iterator[None]:
    """Hold the study's sampling lock while the block runs: one sampler ask at a time per study
    across every server process and machine, so that the no-repeat check of a finite space and
    the constant liar of TPE see every trial asked before. PostgreSQL: a transaction-level
    advisory lock on a connection of Optuna's storage, released when the block ends (or its
    connection drops). SQLite: nothing to take (the server is one process there)."""
    engine = optuna_storage.engine
    if not dialect.has_advisory_locks(engine):
        yield
        return
    with engine.begin() as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:space, :study)"),
            {"space": SAMPLING_LOCK_SPACE, "study": optuna_study_id},
        )
        yield


def _studies_by_id(session: Session, study_ids: Collection[int]) -> None:
    """Lock the studies in id order."""
    query = select(StudyRow.id).where(StudyRow.id.in_(study_ids)).order_by(StudyRow.id)
    session.scalars(query.with_for_update()).all()
