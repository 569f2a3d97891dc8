"""A unit of work: one short write transaction plus the Optuna calls that must follow its commit.

Optuna writes through its own connections; on SQLite they would wait on the lock our open
transaction holds. So domain code queues Optuna calls with `later(...)`, and they run once the
transaction has committed (never if it rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from service.storage.db import Database
from service.storage.models import EventRow


class Unit:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._after: list[Callable[[], Any]] = []

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        self._after.append(lambda: fn(*args))

    def event(self, study_id: int, kind: str, trial_id: int | None = None, **payload: Any) -> None:
        """Append to the study's event log (the page's live stream) in this transaction."""
        self.session.add(EventRow(study_id=study_id, kind=kind, trial_id=trial_id, payload=payload))


@contextmanager
def unit_of_work(db: Database) -> Iterator[Unit]:
    with db.write() as session:
        unit = Unit(session)
        yield unit
    for fn in unit._after:
        fn()
