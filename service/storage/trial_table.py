"""The queries of the page's trial table: count and page a study's trials under a filter, sorted
by a column in SQL, or read the few columns a sort computed in Python needs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from hpo.protocol import TrialState
from service.storage.models import TrialRow, WorkerRow

COLUMNS: dict[str, Any] = {
    "number": TrialRow.number,
    "state": TrialRow.state,
    "value": TrialRow.value,
    "epochs": TrialRow.epochs,
    "worker": WorkerRow.name,
    "started_at": TrialRow.started_at,
    "finished_at": TrialRow.finished_at,
    "bracket": TrialRow.bracket,
    "rung": TrialRow.rung,
}


@dataclass(frozen=True)
class TableFilter:
    """Which trials of a study the table shows; every condition given must hold.

    `params`: (name, value) pairs, the value as written in the params' JSON; `texts`: words
    found in the params, the worker's name or the reason (case-insensitive); `reached`: the
    trial is at that rung or was promoted past it."""

    study_id: int
    states: tuple[TrialState, ...] = ()
    bracket: int | None = None
    rung: int | None = None
    reached: int | None = None
    numbers: tuple[int, ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    texts: tuple[str, ...] = ()


Row = tuple[TrialRow, str | None]  # a trial and its worker's name


class TrialTableStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def count(self, where: TableFilter) -> int:
        return (
            self.session.scalar(select(func.count()).select_from(_matching(where).subquery())) or 0
        )

    def page_by_column(
        self, where: TableFilter, column: str, descending: bool, offset: int, limit: int
    ) -> list[Row]:
        """One page sorted by one of `COLUMNS` (missing values last either way, then by trial
        number in the same direction)."""
        ids = _matching(where).subquery()
        key = COLUMNS[column]
        order = key.desc() if descending else key.asc()
        tiebreak = TrialRow.number.desc() if descending else TrialRow.number.asc()
        query = (
            select(TrialRow, ids.c.worker)
            .join(ids, ids.c.id == TrialRow.id)
            .outerjoin(WorkerRow, WorkerRow.id == TrialRow.worker_id)
            .order_by(key.is_(None), order, tiebreak)
            .offset(offset)
            .limit(limit)
        )
        return [(row, worker) for row, worker in self.session.execute(query)]

    def times(self, where: TableFilter) -> list[tuple[int, datetime | None, datetime | None, int]]:
        """(id, started_at, finished_at, number) of every matching trial."""
        ids = _matching(where).subquery()
        query = select(
            TrialRow.id, TrialRow.started_at, TrialRow.finished_at, TrialRow.number
        ).join(ids, ids.c.id == TrialRow.id)
        return [tuple(row) for row in self.session.execute(query)]  # type: ignore[misc]

    def params(self, where: TableFilter) -> list[tuple[int, dict[str, Any], int]]:
        """(id, params, number) of every matching trial."""
        ids = _matching(where).subquery()
        query = select(TrialRow.id, TrialRow.params, TrialRow.number).join(
            ids, ids.c.id == TrialRow.id
        )
        return [(i, params or {}, number) for i, params, number in self.session.execute(query)]

    def rows(self, where: TableFilter, trial_ids: Collection[int]) -> dict[int, Row]:
        """The matching trials among `trial_ids`, with their workers' names, by id."""
        ids = _matching(where).subquery()
        query = (
            select(TrialRow, ids.c.worker)
            .join(ids, ids.c.id == TrialRow.id)
            .where(TrialRow.id.in_(trial_ids))
        )
        return {row.id: (row, worker) for row, worker in self.session.execute(query)}


def _matching(where: TableFilter) -> Select[int, str]:
    """SELECT trial id and worker name of the matching trials (joined to their worker)."""
    found = (
        select(TrialRow.id, WorkerRow.name.label("worker"))
        .outerjoin(WorkerRow, WorkerRow.id == TrialRow.worker_id)
        .where(TrialRow.study_id == where.study_id)
    )
    if where.states:
        found = found.where(TrialRow.state.in_(where.states))
    if where.bracket is not None:
        found = found.where(TrialRow.bracket == where.bracket)
    if where.rung is not None:
        found = found.where(TrialRow.rung == where.rung)
    if where.reached is not None:
        found = found.where(TrialRow.rung >= where.reached)
    for number in where.numbers:
        found = found.where(TrialRow.number == number)
    for name, value in where.params:
        found = found.where(_param_is(name, value))
    for word in where.texts:
        found = found.where(_mentions(word))
    return found


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _param_is(name: str, value: str) -> ColumnElement[bool]:
    params = type_coerce(TrialRow.params, Text)
    quoted = f'"{name}":"{value}"'
    bare = f'"{name}":{value}'
    return or_(
        params.like(_like(quoted), escape="\\"),
        params.like(_like(bare + ","), escape="\\"),
        params.like(_like(bare + "}"), escape="\\"),
    )


def _mentions(word: str) -> ColumnElement[bool]:
    pattern = _like(word)
    return or_(
        type_coerce(TrialRow.params, Text).ilike(pattern, escape="\\"),
        WorkerRow.name.ilike(pattern, escape="\\"),
        type_coerce(TrialRow.reason, String).ilike(pattern, escape="\\"),
    )
