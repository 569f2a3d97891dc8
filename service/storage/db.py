"""Engines and sessions for the service's own tables (and the engine settings Optuna shares).

SQLite is the embedded default. Many workers write at once, so every SQLite connection runs in
WAL mode with a busy timeout, and write transactions start with `BEGIN IMMEDIATE`: a deferred
transaction that reads and then writes cannot wait for the lock (SQLite answers "database is
locked" at once to avoid a deadlock), an immediate one takes the write lock up front and waits.
Read-only sessions start deferred so that readers never queue behind writers. Before its
`BEGIN IMMEDIATE` a writer of this process takes its turn in the file's write queue
(`service.storage.write_queue`: first come, first served) rather than waiting in SQLite's busy
handler. That set-up is SQLite's alone, so it lives with the other dialect differences in
`service.storage.dialect`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from service.storage.dialect import READ_ONLY, configure_sqlite, engine_kwargs, is_sqlite

# How long `hpo server` and `hpo db upgrade` wait for a database that does not accept
# connections yet (a container or pod started before it), unless told otherwise.
DEFAULT_WAIT_SECONDS = 60.0
log = logging.getLogger("hpo.storage")


class DatabaseUnavailable(RuntimeError):
    """The database did not accept a connection within the time given; the message names it
    (password hidden) and the driver's last reason."""


def wait_for_database(
    url: str,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    *,
    say: Callable[[str], None] = log.warning,
    retry_every: float = 1.0,
) -> None:
    """Return once the database at `url` accepts a connection, retrying for up to `wait_seconds`,
    so that a server or migration started before its database (compose, Kubernetes, a reboot)
    waits for it instead of failing. Says so once, in one line, when the first try fails.
    Wrong credentials or a missing database are not waited for: they will not fix themselves.
    SQLite needs no waiting. Raises `DatabaseUnavailable` when the time is up."""
    if is_sqlite(url):
        return
    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + wait_seconds
    said = False
    try:
        while True:
            try:
                with engine.connect():
                    return
            except OperationalError as exc:
                reason = _first_line(exc.orig) if exc.orig is not None else str(exc)
                if _permanent(reason) or time.monotonic() >= deadline:
                    raise DatabaseUnavailable(
                        f"database {shown} is not available"
                        + (f" after {wait_seconds:g} s" if said else "")
                        + f": {reason}"
                    ) from exc
                if not said:
                    say(f"waiting up to {wait_seconds:g} s for database {shown}: {reason}")
                    said = True
                time.sleep(max(0.0, min(retry_every, deadline - time.monotonic())))
    finally:
        engine.dispose()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _permanent(reason: str) -> bool:
    """Errors that waiting cannot cure: refused credentials, a database that does not exist."""
    reason = reason.lower()
    return "authentication failed" in reason or (
        "database" in reason and "does not exist" in reason
    )


def make_engine(url: str, busy_timeout_s: float = 30.0) -> Engine:
    engine = create_engine(url, **engine_kwargs(url, busy_timeout_s))
    if is_sqlite(url):
        configure_sqlite(engine, busy_timeout_s)
    return engine


def open_optuna_storage(url: str, busy_timeout_s: float = 30.0) -> Any:
    """Optuna's RDBStorage on the same database, with the same SQLite discipline as ours."""
    from optuna.storages import RDBStorage

    storage = RDBStorage(url, engine_kwargs=engine_kwargs(url, busy_timeout_s))
    if is_sqlite(url):
        configure_sqlite(storage.engine, busy_timeout_s)
        storage.engine.dispose()  # connections opened before the listeners existed
    return storage


class Database:
    """The service's engine plus session factories for writes and reads."""

    def __init__(self, url: str, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_s)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A short write transaction: committed on success, rolled back on any exception."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
