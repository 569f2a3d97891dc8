"""What a test's code sent to the database: the statements and commits through an engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


@contextmanager
def sql_of(engine: Engine) -> Iterator[tuple[list[str], list[object]]]:
    """The statements sent through `engine` meanwhile, and its commits."""
    statements: list[str] = []
    commits: list[object] = []

    def executed(_conn: object, _cursor: object, statement: str, *_: Any) -> None:
        statements.append(statement)

    def committed(connection: object) -> None:
        commits.append(connection)

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", committed)
    try:
        yield statements, commits
    finally:
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(engine, "commit", committed)
