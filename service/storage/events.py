"""The event log: append-only, read by id, what the page's live stream follows.

A transaction's events are kept in order and written together, with one Core `INSERT` of many
rows, when its stores flush and before it commits (`Stores.flush`, `unit_of_work`): as ORM
objects each needed its id back, which on SQLite is one statement a row (128 for a batched
report of 128 items)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from service.storage.models import EventRow


class EventStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: list[dict[str, Any]] = []

    def add(self, study_id: int, kind: str, trial_id: int | None, payload: dict[str, Any]) -> None:
        """Append an event; it is written at the next `write_pending` (flush or commit)."""
        self._pending.append(
            {"study_id": study_id, "kind": kind, "trial_id": trial_id, "payload": payload}
        )

    def write_pending(self) -> None:
        """Write the events added since the last call, in the order they were added."""
        if self._pending:
            rows, self._pending = self._pending, []
            self.session.execute(insert(EventRow), rows)

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
