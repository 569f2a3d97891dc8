"""Run the service's Alembic migrations from code (`hpo server`, `hpo db upgrade`, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from service.storage import dialect
from service.storage.db import (
    DEFAULT_WAIT_SECONDS,
    make_engine,
    open_optuna_storage,
    wait_for_database,
)

VERSION_TABLE = "hpo_alembic_version"  # Optuna stamps the default `alembic_version`
# The PostgreSQL advisory lock that lets one process at a time create or migrate the schema:
# the bytes of "hpo_migr" as a signed 64-bit key (any constant would do; this one is ours).
MIGRATION_LOCK_KEY = int.from_bytes(b"hpo_migr", "big", signed=True)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate and comparisons look at the service's own `hpo_*` tables only."""
    if type_ == "table":
        return bool(name) and str(name).startswith("hpo_") and name != VERSION_TABLE
    return True


def _script_location() -> Path:
    """The migrations folder: installed, the top-level alembic/ ships as `service/migrations`;
    in a source checkout (editable install) it is the top-level alembic/ itself."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "migrations"
    if (installed / "env.py").exists():
        return installed
    return package.parent / "alembic"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the hpo_* tables to `revision`; safe to call on every start (no-op when current).
    Not guarded against another process migrating at the same time: `prepare` is."""
    _run(engine, "upgrade", revision)


@contextmanager
def one_at_a_time(engine: Engine) -> Iterator[None]:
    """Hold the schema lock while the block runs, so that several processes starting together
    (server replicas, a migration job, `hpo db upgrade` by hand) migrate one after another, and
    the later ones find the schema current. PostgreSQL: a session-level advisory lock on its own
    connection, released at the end or when the process dies. SQLite is one machine's file and
    its writers already queue (`BEGIN IMMEDIATE`)."""
    if not dialect.has_advisory_locks(engine):
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()


def prepare(
    url: str, *, wait_seconds: float = DEFAULT_WAIT_SECONDS, busy_timeout_s: float = 30.0
) -> None:
    """Make the database at `url` ready for the server: wait for it to accept connections (up
    to `wait_seconds`, see `wait_for_database`), then, holding the schema lock, create Optuna's
    tables and bring ours to head. Safe from any number of processes at once; raises
    `DatabaseUnavailable` when the database never came."""
    wait_for_database(url, wait_seconds)
    engine = make_engine(url, busy_timeout_s)
    try:
        with one_at_a_time(engine):
            open_optuna_storage(url, busy_timeout_s).engine.dispose()  # Optuna's tables
            upgrade(engine)
    finally:
        engine.dispose()


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)
