"""The event log: append-only, read by id, what the page's live stream follows.

A transaction's events are kept in order and written together, in one statement
(`dialect.insert_rows`), when its stores flush and before it commits (`Stores.flush`,
`unit_of_work`): as ORM objects each needed its id back, which on SQLite is one statement a
row (128 for a batched report of 128 items)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.storage import dialect, json_text
from service.storage.models import EventRow, utcnow


class EventStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: list[dict[str, Any]] = []

    def add(self, study_id: int, kind: str, trial_id: int | None, payload: dict[str, Any]) -> None:
        """Append an event; it is written at the next `write_pending` (flush or commit).
        The events written together share one time, their first's (a batched report's
        events are one moment to the page, and their one time is converted once). A member
        of `payload` may be stored JSON text already (`EncodedJSON`, a curve point's
        metrics from `CurveStore.add_new`): it is embedded as it is, not encoded again."""
        at = self._pending[0]["created_at"] if self._pending else utcnow()
        self._pending.append(
            {
                "study_id": study_id,
                "kind": kind,
                "trial_id": trial_id,
                "payload": json_text.encode_object(payload),
                "created_at": at,
            }
        )

    def write_pending(self) -> None:
        """Write the events added since the last call, in the order they were added (ids
        rise in that order: PostgreSQL's one INSERT ... SELECT FROM unnest(...) takes the
        arrays' rows in order, as SQLite's executemany does)."""
        if self._pending:
            rows, self._pending = self._pending, []
            dialect.insert_rows(self.session, EventRow.__table__, rows)

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
