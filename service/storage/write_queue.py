"""The writers of one SQLite file in this process, served in arrival order.

SQLite lets one connection write at a time. Left to itself, a writer that finds the lock taken
sleeps in SQLite's busy handler and tries again (after 1, 2, 5, ... up to 100 ms), so whoever
tries at the right moment wins and an unlucky writer can wait seconds behind later arrivals.
The one server process SQLite allows therefore queues its own writers first: every write
transaction on the file (the service's sessions, Optuna's RDBStorage, migrations, the reaper)
takes the file's `WriteQueue` before its `BEGIN IMMEDIATE` and gives it back when its
connection commits, rolls back or closes. Reads (a deferred `BEGIN` under WAL) never queue.

The queue is re-entrant per thread: a thread whose transaction is open and that opens a second
one on another connection of the same file passes the queue (SQLite's own lock then decides,
as it did without the queue) instead of waiting for itself. Other processes on the same file
(`hpo db upgrade`, a script) still meet SQLite's busy timeout, not this queue.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any


class WriteQueue:
    """A re-entrant lock handed to its waiters first come, first served."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiting: deque[tuple[int, threading.Lock]] = deque()

    def acquire(self, timeout: float) -> None:
        """Wait for this thread's turn (at most `timeout` seconds, then raise sqlite3's own
        `database is locked`, as the busy timeout did)."""
        me = threading.get_ident()
        with self._mutex:
            if self._owner is None or self._owner == me:
                self._owner = me
                self._depth += 1
                return
            gate = threading.Lock()
            gate.acquire()
            entry = (me, gate)
            self._waiting.append(entry)
        if gate.acquire(timeout=timeout):
            return  # `release` made this thread the owner before opening the gate
        with self._mutex:
            if entry in self._waiting:
                self._waiting.remove(entry)
                raise sqlite3.OperationalError("database is locked")
        # Handed over between the timeout and the mutex: the turn is ours after all.

    def release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth > 0:
                return
            if self._waiting:
                self._owner, gate = self._waiting.popleft()
                self._depth = 1
                gate.release()
            else:
                self._owner = None

    @property
    def waiting(self) -> int:
        """How many threads wait for their turn (for tests and diagnostics)."""
        return len(self._waiting)


# One queue per database file in this process, shared by every engine opened on it (ours,
# Optuna's); an entry lives as long as a connection or engine holds its queue.
_queues: weakref.WeakValueDictionary[str, WriteQueue] = weakref.WeakValueDictionary()
_queues_lock = threading.Lock()


def queue_for(database: str) -> WriteQueue | None:
    """The write queue of the SQLite file `database` (a path as the URL gives it), or None for
    an in-memory database (each connection its own)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = str(Path(database).resolve())
    with _queues_lock:
        found = _queues.get(key)
        if found is None:
            found = _queues[key] = WriteQueue()
        return found


class QueuedConnection(sqlite3.Connection):
    """A sqlite3 connection that gives its file's write queue back when its transaction ends.

    `hold` is called (by the engine's `begin` listener, `service.storage.dialect`) before a
    write transaction's `BEGIN IMMEDIATE`; the queue goes back after the COMMIT has reached the
    file (not before, so the next writer does not meet the lock still held), after a rollback,
    or when the connection closes with a transaction open."""

    write_queue: WriteQueue | None = None
    _held = 0

    def hold(self, timeout: float) -> None:
        if self.write_queue is not None:
            self.write_queue.acquire(timeout)
            self._held += 1

    def let_go(self) -> None:
        while self._held and self.write_queue is not None:
            self._held -= 1
            self.write_queue.release()

    def commit(self) -> None:
        super().commit()
        self.let_go()  # a failed COMMIT keeps the turn until the rollback that follows

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.let_go()


def attach(connection: Any, database: str) -> None:
    """Give a new connection made with `factory=QueuedConnection` its file's queue."""
    if isinstance(connection, QueuedConnection):
        connection.write_queue = queue_for(database)
