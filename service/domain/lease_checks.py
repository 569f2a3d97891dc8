"""The checks every write by a lease holder makes: that its token still holds the trial, and the
row locks it takes before changing it; and what a holder is told about a trial that no longer runs.

Shared by both halves of the worker protocol (`leasing` answers heartbeats with
`decision_for_finished`; `protocol` checks and locks a trial on every report), so it imports
neither of them.

Lock order, the invariant every writer keeps so that two transactions cannot deadlock: the study
row before its trial rows, and rows of one kind in id order. `lock` below, the reaper
(`Leasing._reap`) and new-trial reservation (`Leasing._studies_by_need`) all follow it.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import Decision, TrialState
from service.domain.errors import NotFound, StaleLease
from service.storage.models import StudyRow, TrialRow


def lock(session: Session, trial_id: int, token: str) -> tuple[StudyRow, TrialRow]:
    """The trial and its study, row-locked in the one order every writer uses (study, then
    trial), after checking the lease token. On SQLite the write lock already serializes."""
    study_id = None
    if session.get_bind().dialect.name != "sqlite":  # SQLite: BEGIN IMMEDIATE locks all
        study_id = session.scalar(select(TrialRow.study_id).where(TrialRow.id == trial_id))
    if study_id is not None:
        session.scalars(select(StudyRow).where(StudyRow.id == study_id).with_for_update()).first()
        session.scalars(select(TrialRow).where(TrialRow.id == trial_id).with_for_update()).first()
    trial = leased(session, trial_id, token)
    study = session.get(StudyRow, trial.study_id)
    assert study is not None
    return study, trial


def leased(session: Session, trial_id: int, token: str) -> TrialRow:
    trial = session.get(TrialRow, trial_id)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found (its study may have been deleted)")
    if not holds(trial, token):
        raise StaleLease(
            f"lease token of trial {trial_id} is stale: the trial was handed to another "
            "worker or ended"
        )
    return trial


def holds(trial: TrialRow, token: str) -> bool:
    """Whether `token` is the trial's current lease token, compared in constant time."""
    current = trial.lease_token
    # As bytes: compare_digest raises TypeError for str with non-ASCII characters.
    return current is not None and secrets.compare_digest(current.encode(), token.encode())


def require_running(trial: TrialRow) -> None:
    if trial.state != TrialState.RUNNING.value:
        raise StaleLease(f"trial {trial.id} is {trial.state}, not running")


def decision_for_finished(trial: TrialRow) -> Decision:
    if trial.state == TrialState.PRUNED.value:
        return Decision.PRUNE
    if trial.state == TrialState.PAUSED.value:
        return Decision.PAUSE
    return Decision.STOP
