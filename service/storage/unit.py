"""Transactions as the domain sees them: a set of stores over one session.

`reading(db)` gives the stores of a read-only transaction. `unit_of_work(db)` gives a `Unit`:
the stores of one short write transaction, plus the Optuna calls that must follow its commit.
Optuna writes through its own connections; on SQLite they would wait on the lock our open
transaction holds. So domain code queues Optuna calls with `later(...)`, and they run once the
transaction has committed (never if it rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from service.storage.curves import CurveStore
from service.storage.db import Database
from service.storage.events import EventStore
from service.storage.studies import StudyStore
from service.storage.trial_table import TrialTableStore
from service.storage.trials import TrialStore
from service.storage.workers import WorkerStore


class Stores:
    """Every store, over one transaction's session."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.studies = StudyStore(session)
        self.trials = TrialStore(session)
        self.workers = WorkerStore(session)
        self.curves = CurveStore(session)
        self.events = EventStore(session)
        self.table = TrialTableStore(session)  # the page's trial table

    def flush(self) -> None:
        """Write the changes made to records so far, so that the next query sees them."""
        self.trials.write_progress()  # many reports' trials in one statement
        self._session.flush()
        self.events.write_pending()


class Unit(Stores):
    """The stores of one write transaction, and what runs after it commits."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._after: list[Callable[[], Any]] = []

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call `fn(*args)` once the transaction has committed."""
        self._after.append(lambda: fn(*args))

    def event(self, study_id: int, kind: str, trial_id: int | None = None, **payload: Any) -> None:
        """Append to the study's event log (the page's live stream) in this transaction."""
        self.events.add(study_id, kind, trial_id, payload)


@contextmanager
def unit_of_work(db: Database) -> Iterator[Unit]:
    with db.write() as session:
        unit = Unit(session)
        yield unit
        unit.flush()  # the records, then the events, before the commit
    for fn in unit._after:
        fn()


@contextmanager
def reading(db: Database) -> Iterator[Stores]:
    with db.read() as session:
        yield Stores(session)
