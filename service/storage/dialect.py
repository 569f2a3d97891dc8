"""Where the queries differ between SQLite and PostgreSQL, in one module.

The engine-level set-up (WAL, busy timeout, `BEGIN IMMEDIATE`) lives with the engine in
`service.storage.db`; this module holds what the stores ask while building a query:
- whether row locks mean anything (SQLite's `BEGIN IMMEDIATE` already holds the whole database
  for the writer, so a lookup made only to lock rows can be skipped there);
- how to read one member of our JSON text in SQL (SQLite's JSON functions; elsewhere the text is
  parsed in Python).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case, func
from sqlalchemy.orm import Session


def name(session: Session) -> str:
    return session.get_bind().dialect.name


def locks_rows(session: Session) -> bool:
    """Whether `SELECT ... FOR UPDATE` locks rows here (SQLite's writer already holds all)."""
    return name(session) != "sqlite"


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
