"""The studies table: create, find, lock, count and delete studies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hpo.protocol import StudyState
from service.storage import locks
from service.storage.models import StudyRow


class NameTaken(Exception):
    """A study with this name exists already (the unique index said so)."""


class StudyStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(
        self,
        name: str,
        spec: dict[str, Any],
        optuna_study_id: int,
        max_trials: int,
        parallel_trials: int,
        created_at: datetime,
    ) -> StudyRow:
        """A new running study with no trials. Raises NameTaken (and the transaction must be
        given up) when another study took the name first."""
        row = StudyRow(
            name=name,
            spec=spec,
            state=StudyState.RUNNING,
            optuna_study_id=optuna_study_id,
            n_trials=0,
            max_trials=max_trials,
            parallel_trials=parallel_trials,
            created_at=created_at,
        )
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise NameTaken(name) from exc
        return row

    def get(self, study_id: int) -> StudyRow | None:
        return self.session.get(StudyRow, study_id)

    def optuna_ids(self) -> dict[int, int]:
        """Every study's Optuna study id, by study id."""
        query = select(StudyRow.id, StudyRow.optuna_study_id).where(
            StudyRow.optuna_study_id.is_not(None)
        )
        return {i: o for i, o in self.session.execute(query) if o is not None}

    def lock(self, study_id: int) -> StudyRow | None:
        """The study, row-locked for a change of its state or budget."""
        return locks.study(self.session, study_id)

    def lock_running(self) -> list[StudyRow]:
        """Every running study, row-locked in id order: what a lease may take trials from."""
        return locks.studies(self.session, StudyRow.state == StudyState.RUNNING)

    def name_taken(self, name: str) -> bool:
        return self.session.scalar(select(StudyRow.id).where(StudyRow.name == name)) is not None

    def newest_first(self) -> list[StudyRow]:
        return list(self.session.scalars(select(StudyRow).order_by(StudyRow.id.desc())))

    def names(self) -> list[str]:
        return list(self.session.scalars(select(StudyRow.name)))

    def count_by_state(self) -> dict[StudyState, int]:
        """Studies per state, every state present (0 when none)."""
        counts = dict.fromkeys(StudyState, 0)
        rows = self.session.execute(select(StudyRow.state, func.count()).group_by(StudyRow.state))
        for state, n in rows:
            counts[state] = n
        return counts

    def delete(self, study_id: int) -> None:
        """Remove the study; its trials, curves and events go with it (ON DELETE CASCADE)."""
        self.session.execute(delete(StudyRow).where(StudyRow.id == study_id))
