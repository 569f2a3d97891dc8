"""Where SQLite and PostgreSQL differ, in one module.

- The engines: SQLite connections run in WAL mode with a busy timeout and start writes with
  `BEGIN IMMEDIATE` (read-only sessions with a deferred `BEGIN`), each writer of this process
  after taking its turn in the file's write queue (`service.storage.write_queue`); PostgreSQL's
  pool pings.
- Row locks: SQLite's `BEGIN IMMEDIATE` already holds the whole database for the writer, so a
  lookup made only to lock rows can be skipped there.
- Idempotent inserts: `INSERT ... ON CONFLICT DO NOTHING`, in each dialect's spelling.
- Many rows in one INSERT: an executemany on SQLite; on PostgreSQL one short statement that
  takes the rows as one JSON text (`json_to_recordset`), the same text for any number of rows.
- JSON: SQLite can read one member of our JSON text in SQL; elsewhere the text is parsed in
  Python.
- Migrations: only PostgreSQL has the advisory lock that lets one process at a time migrate.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    case,
    event,
    func,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.storage.json_text import EncodedJSON
from service.storage.write_queue import QueuedConnection, attach

# The execution option that marks a read-only session (a deferred BEGIN on SQLite).
READ_ONLY = "hpo_read_only"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def engine_kwargs(url: str, busy_timeout_s: float = 30.0) -> dict[str, Any]:
    """Keyword arguments for `create_engine` (ours and Optuna's RDBStorage) for this URL."""
    if is_sqlite(url):
        # check_same_thread: FastAPI runs sync routes in a thread pool; the pool hands a
        # connection to one thread at a time. factory: connections that give the file's write
        # queue back when their transaction ends.
        return {
            "connect_args": {
                "timeout": busy_timeout_s,
                "check_same_thread": False,
                "factory": QueuedConnection,
            }
        }
    return {"pool_pre_ping": True}


def configure_sqlite(engine: Engine, busy_timeout_s: float = 30.0) -> None:
    """WAL, busy timeout and `BEGIN IMMEDIATE` for writers on every connection of `engine`;
    a writer first waits for its turn in the file's write queue (first come, first served,
    instead of SQLite's busy handler sleeping and retrying), for up to `busy_timeout_s`."""
    database = engine.url.database or ""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        attach(dbapi_conn, database)
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        # With WAL, NORMAL is durable against application crashes (only a power loss can drop
        # the last transactions) and avoids an fsync per commit.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        raw = conn.connection.dbapi_connection
        queued = isinstance(raw, QueuedConnection)
        if queued:
            raw.hold(busy_timeout_s)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if queued:
                raw.let_go()
            raise


def has_advisory_locks(engine: Engine) -> bool:
    """Whether the database offers the advisory lock that serializes migrations."""
    return engine.dialect.name == "postgresql"


def name(session: Session) -> str:
    return session.get_bind().dialect.name


def locks_rows(session: Session) -> bool:
    """Whether `SELECT ... FOR UPDATE` locks rows here (SQLite's writer already holds all)."""
    return name(session) != "sqlite"


def insert_new(session: Session, table: Any, values: dict[str, Any]) -> bool:
    """Insert one row unless a row with its primary key exists (`INSERT ... ON CONFLICT DO
    NOTHING`, one statement where a look-up and an insert were two); whether it was new."""
    if name(session) == "postgresql":
        # psycopg's rowcount does not tell a skipped row; RETURNING does.
        key = next(iter(table.primary_key.columns))
        statement = postgresql.insert(table).values(**values).on_conflict_do_nothing()
        return session.execute(statement.returning(key)).first() is not None
    # sqlite3's rowcount does (and RETURNING needs SQLite 3.35).
    result = session.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0) == 1)


def insert_new_rows(
    session: Session, table: Any, rows: list[dict[str, Any]], key: tuple[str, ...]
) -> set[tuple[Any, ...]]:
    """Insert the rows whose primary key (`key`, its columns) is not taken, in one statement
    (`INSERT ... ON CONFLICT DO NOTHING RETURNING key`); the keys of the rows it stored. The
    first of two rows with one key in `rows` is the one stored."""
    if not rows:
        return set()
    if name(session) == "postgresql":
        statement = _insert(table, tuple(rows[0]), key)
        return {tuple(row) for row in session.execute(statement, {"rows": _recordset(table, rows)})}
    if sqlite3.sqlite_version_info < (3, 35):
        return {tuple(r[c] for c in key) for r in rows if insert_new(session, table, r)}
    # One multi-row INSERT of the rows' values, converted as the columns' types convert
    # them, sent to the driver as it is (`_sqlite_rows`): SQLAlchemy's own multi-row insert
    # ("insertmanyvalues") built and processed a parameter dict a row first.
    columns = tuple(rows[0])
    values = _sqlite_rows(session, table, columns, rows)
    connection = session.connection()
    stored: set[tuple[Any, ...]] = set()
    for start in range(0, len(values), _SQLITE_ROWS_A_STATEMENT):
        chunk = values[start : start + _SQLITE_ROWS_A_STATEMENT]
        sql = _sqlite_insert_new_sql(session, table, columns, key, len(chunk))
        flat = tuple(value for row in chunk for value in row)
        stored.update(tuple(row) for row in connection.exec_driver_sql(sql, flat))
    return stored


def insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys; a column they leave out takes its server
    default, not a Python-side one) in one statement."""
    if not rows:
        return
    if name(session) == "postgresql":
        session.execute(_insert(table, tuple(rows[0])), {"rows": _recordset(table, rows)})
    else:  # one executemany of the converted rows (see `_sqlite_rows`)
        columns = tuple(rows[0])
        sql = _sqlite_insert_sql(session, table, columns)
        session.connection().exec_driver_sql(sql, _sqlite_rows(session, table, columns, rows))


def update_rows(
    session: Session, table: Any, rows: list[dict[str, Any]], key: str, *, locked: bool = False
) -> None:
    """Set the columns of each of `rows` (dicts with the same keys) on the row whose `key`
    column equals the dict's `key` value, in one statement: an executemany UPDATE on
    SQLite; on PostgreSQL one `UPDATE ... FROM json_to_recordset(:rows)` (not one UPDATE a
    row, even pipelined). `locked`: the transaction holds every one of the rows `FOR
    UPDATE` already (taken in the lock order), so the ordered lock is left out."""
    if not rows:
        return
    if name(session) == "postgresql":
        # The rows locked in key order first, as the ORM's flush (in primary-key order) took
        # them: an UPDATE ... FROM locks them in whatever order its join runs, and two writers
        # of overlapping rows (a heartbeat and a batched report) could then deadlock. Rows
        # this transaction holds already (a batched report's) wait for no one.
        if not locked:
            keys = sorted(row[key] for row in rows)
            session.execute(_lock_in_order(table, key), {"keys": keys})
        session.execute(_update(table, tuple(rows[0]), key), {"rows": _recordset(table, rows)})
        return
    # One executemany of the converted rows (see `_sqlite_rows`), the key last.
    columns = (*(c for c in rows[0] if c != key), key)
    sql = _sqlite_update_sql(session, table, columns)
    session.connection().exec_driver_sql(sql, _sqlite_rows(session, table, columns, rows))


# SQLite: rows of one multi-row INSERT at most (4 columns a row stay far below SQLite's
# limit of 32766 parameters a statement).
_SQLITE_ROWS_A_STATEMENT = 1000


def _sqlite_rows(
    session: Session, table: Any, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    """SQLite: `rows`' values of `columns` as tuples for the driver, each through its column
    type's own bind conversion (a JSON text column's dumps, a datetime's text), as
    SQLAlchemy converts a statement's parameters. Sent with `exec_driver_sql`, they skip
    SQLAlchemy's per-row work around that conversion (a parameter dict a row, built and
    then processed key by key: half of a batched report's three writes in process). A value
    that is the same object as the row before's (a batch's one time stamp) is converted
    once; an `EncodedJSON` (a JSON text column's text already) not at all."""
    processors = _sqlite_processors(session.get_bind().dialect, table, columns)
    converted: list[tuple[Any, ...]] = []
    last: list[Any] = [_NOTHING] * len(columns)
    done: list[Any] = [None] * len(columns)
    for row in rows:
        out = []
        for i, column in enumerate(columns):
            value = row[column]
            process = processors[i]
            if process is not None and value is not None and type(value) is not EncodedJSON:
                if value is not last[i]:
                    last[i], done[i] = value, process(value)
                value = done[i]
            out.append(value)
        converted.append(tuple(out))
    return converted


_NOTHING = object()


@lru_cache(maxsize=32)
def _sqlite_processors(dialect: Any, table: Any, columns: tuple[str, ...]) -> tuple[Any, ...]:
    """Each column's bind conversion on `dialect` (None: the value goes as it is). A None
    value is never converted: every conversion of these columns leaves None as it is."""
    # dialect_impl: the type as the dialect runs it (SQLite's own DATETIME text under a
    # TypeDecorator), as SQLAlchemy converts a statement's parameters.
    return tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns)


def _quoted(session: Session, names: Any) -> list[str]:
    quote = session.get_bind().dialect.identifier_preparer.quote
    return [quote(n) for n in names]


def _sqlite_insert_sql(session: Session, table: Any, columns: tuple[str, ...]) -> str:
    """SQLite: `INSERT INTO table (columns) VALUES (?, ...)`, for an executemany."""
    return _sqlite_cached(session, ("insert", table.name, columns, (), 1))


def _sqlite_insert_new_sql(
    session: Session, table: Any, columns: tuple[str, ...], key: tuple[str, ...], count: int
) -> str:
    """SQLite: `INSERT INTO table (columns) VALUES (?, ...), ... ON CONFLICT DO NOTHING
    RETURNING key` for `count` rows."""
    return _sqlite_cached(session, ("insert", table.name, columns, key, count))


def _sqlite_update_sql(session: Session, table: Any, columns: tuple[str, ...]) -> str:
    """SQLite: `UPDATE table SET column = ?, ... WHERE key = ?` (the key: the last column)."""
    return _sqlite_cached(session, ("update", table.name, columns, (), 1))


def _sqlite_cached(session: Session, what: tuple[Any, ...]) -> str:
    sql = _SQLITE_SQL.get(what)
    if sql is None:
        kind, table, columns, key, count = what
        [target, *names] = _quoted(session, (table, *columns))
        if kind == "update":
            sets = ", ".join(f"{n} = ?" for n in names[:-1])
            sql = f"UPDATE {target} SET {sets} WHERE {names[-1]} = ?"
        else:
            row = "(" + ", ".join("?" for _ in names) + ")"
            sql = f"INSERT INTO {target} ({', '.join(names)}) VALUES " + ", ".join([row] * count)
            if key:
                returning = ", ".join(_quoted(session, key))
                sql += f" ON CONFLICT DO NOTHING RETURNING {returning}"
        if len(_SQLITE_SQL) < 4096:  # a few tables, and batch sizes up to the chunk's
            _SQLITE_SQL[what] = sql
    return sql


_SQLITE_SQL: dict[tuple[Any, ...], str] = {}


def _recordset(table: Any, rows: list[dict[str, Any]]) -> str:
    """`rows` as one JSON array of objects, each value through its column type's own
    conversion first (a JSON text column's dumps, a datetime's time zone; an `EncodedJSON`
    is that text already), for `_insert`."""
    columns = tuple(rows[0])
    convert = _converters(table, columns)
    as_json = [
        {
            c: _json_safe(
                value if (f := convert[c]) is None or type(value) is EncodedJSON else f(value)
            )
            for c, value in row.items()
        }
        for row in rows
    ]
    return json.dumps(as_json, separators=(",", ":"), allow_nan=False, default=_isoformat)


def _json_safe(value: Any) -> Any:
    """A float that JSON has no number for (NaN, the infinities) as the text PostgreSQL
    reads such a float from ("NaN", "Infinity", "-Infinity"); anything else as it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be sent in a JSON record set")


@lru_cache(maxsize=16)
def _converters(table: Any, columns: tuple[str, ...]) -> dict[str, Any]:
    pg = postgresql.dialect()
    return {c: table.c[c].type.bind_processor(pg) for c in columns}


@lru_cache(maxsize=16)
def _insert(table: Any, columns: tuple[str, ...], key: tuple[str, ...] = ()) -> Any:
    """PostgreSQL: `INSERT INTO table (columns) SELECT ... FROM json_to_recordset(:rows)`,
    with `ON CONFLICT DO NOTHING RETURNING key` when a key is given, for rows sent as one
    JSON text (`_recordset`). Its text is short and the same for any number of rows, so
    psycopg and the server parse it once, and the rows cost one `json.dumps`; SQLAlchemy's
    multi-row VALUES was a new text of 4 parameters a row for every batch, built by
    SQLAlchemy, converted by psycopg and planned by the server (about a third of a 128-item
    batched report's time on PostgreSQL), and arrays (`unnest`) went through psycopg's
    per-element array dumper."""
    pg = postgresql.dialect()
    quote = pg.identifier_preparer.quote_identifier
    names = ", ".join(quote(c) for c in columns)
    types = ", ".join(f"{quote(c)} {table.c[c].type.compile(dialect=pg)}" for c in columns)
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS r({types})"
    )
    if key:
        sql += f" ON CONFLICT DO NOTHING RETURNING {', '.join(quote(c) for c in key)}"
    return text(sql)


@lru_cache(maxsize=16)
def _lock_in_order(table: Any, key: str) -> Any:
    """PostgreSQL: lock the rows whose `key` is in the array `:keys`, in key order."""
    pg = postgresql.dialect()
    quote = pg.identifier_preparer.quote_identifier
    array = f"{table.c[key].type.compile(dialect=pg)}[]"
    return text(
        f"SELECT {quote(key)} FROM {quote(table.name)} WHERE {quote(key)} = ANY(CAST(:keys AS "
        f"{array})) ORDER BY {quote(key)} FOR UPDATE"
    )


@lru_cache(maxsize=16)
def _update(table: Any, columns: tuple[str, ...], key: str) -> Any:
    """PostgreSQL: `UPDATE table SET column = r.column, ... FROM json_to_recordset(:rows)
    AS r(...) WHERE table.key = r.key`, for `update_rows`."""
    pg = postgresql.dialect()
    quote = pg.identifier_preparer.quote_identifier
    target = quote(table.name)
    types = ", ".join(f"{quote(c)} {table.c[c].type.compile(dialect=pg)}" for c in columns)
    sets = ", ".join(f"{quote(c)} = r.{quote(c)}" for c in columns if c != key)
    return text(
        f"UPDATE {target} SET {sets} FROM json_to_recordset(CAST(:rows AS json)) AS r({types}) "
        f"WHERE {target}.{quote(key)} = r.{quote(key)}"
    )


def json_member(
    session: Session, text: Any, key: str
) -> tuple[ColumnElement[Any], ColumnElement[Any]] | None:
    """Two SQL expressions reading member `key` of the JSON text column `text`, or None where
    the database cannot (then the caller parses the text in Python).

    SQLite's JSON functions refuse the NaN / Infinity tokens that our JSON text keeps: the
    first expression is the member where the text is valid JSON to SQLite (else NULL), the
    second the whole text where it is not (else NULL), which `member_of` then reads. No text is
    rewritten, so a key holding "NaN" or "Infinity" is found under its own name."""
    if name(session) != "sqlite" or '"' in key or "\\" in key:
        return None
    valid = func.json_valid(text) == 1
    member = case((valid, func.json_extract(text, f'$."{key}"')), else_=None)
    raw = case((valid, None), else_=text)
    return member, raw


def member_of(member: Any, whole: dict[str, Any] | None, key: str) -> Any:
    """The value of a row read with `json_member`'s two expressions (the second one reads as
    the column's type, so the whole text arrives parsed)."""
    if whole is None:
        return member
    return whole.get(key)
