"""The event log: append-only, read by id, what the page's live stream follows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.storage.models import EventRow


class EventStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, study_id: int, kind: str, trial_id: int | None, payload: dict[str, Any]) -> None:
        self.session.add(EventRow(study_id=study_id, kind=kind, trial_id=trial_id, payload=payload))

    def after(self, study_id: int, after: int, limit: int) -> list[EventRow]:
        """The study's events with an id above `after`, oldest first, at most `limit`."""
        query = (
            select(EventRow)
            .where(EventRow.study_id == study_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(limit)
        )
        return list(self.session.scalars(query))

    def last_id(self, study_id: int) -> int:
        """The id of the study's newest event, 0 when it has none."""
        query = select(func.max(EventRow.id)).where(EventRow.study_id == study_id)
        return self.session.scalar(query) or 0
