"""The page's trial table: one page of a study's trials, sorted and filtered, with offset paging
and a total (the page shows "51-100 of 9,812").

Sorting by a column happens in SQL. Sorting by duration or by a parameter reads just the keys of
every matching trial (two small columns), sorts them here and then loads the one page: a few tens
of milliseconds for 10,000 trials, the same on every database. No FastAPI here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from hpo.protocol import TrialState
from service.domain.dashboard import load_study
from service.domain.errors import InvalidInput
from service.storage.db import Database
from service.storage.models import TrialRow, WorkerRow, utcnow

MAX_LIMIT = 500
SQL_SORTS: dict[str, Any] = {
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
SORTS = (*SQL_SORTS, "duration", "param:<name>")
_PARAM_TOKEN = re.compile(r"^([A-Za-z_][\w.\-]*)=(.+)$")


@dataclass(frozen=True)
class TableQuery:
    """What the table asks for. `text` holds space-separated tokens, all of which must match:
    `#12` (trial number), `name=value` (a parameter's value, as written in the params' JSON)
    or plain text (found in the params, the worker's name or the reason). `bracket` and `rung`
    keep the trials of one bracket / rung (successive halving, Hyperband); `reached` keeps
    every trial that reached rung `reached` (at it now or promoted past it)."""

    offset: int = 0
    limit: int = 50
    sort: str = "number"
    descending: bool = False
    states: tuple[str, ...] = ()
    text: str = ""
    bracket: int | None = None
    rung: int | None = None
    reached: int | None = None


@dataclass(frozen=True)
class TableRow:
    row: TrialRow
    worker: str | None
    duration_s: float | None


@dataclass(frozen=True)
class TablePage:
    total: int
    offset: int
    limit: int
    items: list[TableRow]


def duration_s(row: TrialRow, now: datetime) -> float | None:
    """Seconds from start to finish (to now while unfinished); None if never started."""
    if row.started_at is None:
        return None
    end = row.finished_at or now
    return max(0.0, (end - row.started_at).total_seconds())


class TrialTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    def page(self, study_id: int, query: TableQuery) -> TablePage:
        """One page of the study's trials. Raises NotFound for an unknown study and
        InvalidInput (naming `sort`, `state` or `q`) for a query it cannot answer."""
        sorter = _sorter(query.sort)
        states = _states(query.states)
        limit = max(1, min(query.limit, MAX_LIMIT))
        offset = max(0, query.offset)
        with self.db.read() as session:
            load_study(session, study_id)
            base = _filtered(study_id, states, query)
            total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = sorter(session, base, query.descending, offset, limit)
        now = utcnow()
        items = [TableRow(row, worker, duration_s(row, now)) for row, worker in rows]
        return TablePage(total=total, offset=offset, limit=limit, items=items)


Sorter = Callable[[Session, Select, bool, int, int], list[tuple[TrialRow, str | None]]]


def _sorter(sort: str) -> Sorter:
    if sort in SQL_SORTS:
        return lambda s, base, desc, offset, limit: _sql_page(
            s, base, SQL_SORTS[sort], desc, offset, limit
        )
    if sort == "duration":
        return lambda s, base, desc, offset, limit: _keyed_page(
            s, base, _duration_keys, desc, offset, limit
        )
    if sort.startswith("param:") and len(sort) > len("param:"):
        name = sort[len("param:") :]
        return lambda s, base, desc, offset, limit: _keyed_page(
            s, base, lambda session, ids: _param_keys(session, ids, name), desc, offset, limit
        )
    raise InvalidInput(("sort",), f"cannot sort by '{sort}'; use one of {', '.join(SORTS)}")


def _states(states: tuple[str, ...]) -> list[str]:
    known = {s.value for s in TrialState}
    unknown = [s for s in states if s not in known]
    if unknown:
        raise InvalidInput(
            ("state",), f"unknown trial state '{unknown[0]}'; use {', '.join(sorted(known))}"
        )
    return list(states)


def _filtered(study_id: int, states: list[str], query: TableQuery) -> Select:
    """SELECT trial id and worker name of the matching trials (joined to their worker)."""
    found = (
        select(TrialRow.id, WorkerRow.name.label("worker"))
        .outerjoin(WorkerRow, WorkerRow.id == TrialRow.worker_id)
        .where(TrialRow.study_id == study_id)
    )
    if states:
        found = found.where(TrialRow.state.in_(states))
    if query.bracket is not None:
        found = found.where(TrialRow.bracket == query.bracket)
    if query.rung is not None:
        found = found.where(TrialRow.rung == query.rung)
    if query.reached is not None:
        found = found.where(TrialRow.rung >= query.reached)
    for token in query.text.split():
        found = found.where(_token_clause(token))
    return found


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _token_clause(token: str) -> ColumnElement[bool]:
    params = type_coerce(TrialRow.params, Text)
    if token.startswith("#"):
        if not token[1:].isdigit():
            raise InvalidInput(("q",), f"'{token}': write a trial number as #12")
        return TrialRow.number == int(token[1:])
    match = _PARAM_TOKEN.match(token)
    if match:
        name, value = match.groups()
        quoted = f'"{name}":"{value}"'
        bare = f'"{name}":{value}'
        return or_(
            params.like(_like(quoted), escape="\\"),
            params.like(_like(bare + ","), escape="\\"),
            params.like(_like(bare + "}"), escape="\\"),
        )
    pattern = _like(token)
    return or_(
        params.ilike(pattern, escape="\\"),
        WorkerRow.name.ilike(pattern, escape="\\"),
        type_coerce(TrialRow.reason, String).ilike(pattern, escape="\\"),
    )


def _sql_page(
    session: Session, base: Select, column: Any, desc: bool, offset: int, limit: int
) -> list[tuple[TrialRow, str | None]]:
    ids = base.subquery()
    order = column.desc() if desc else column.asc()
    tiebreak = TrialRow.number.desc() if desc else TrialRow.number.asc()
    query = (
        select(TrialRow, ids.c.worker)
        .join(ids, ids.c.id == TrialRow.id)
        .outerjoin(WorkerRow, WorkerRow.id == TrialRow.worker_id)
        .order_by(column.is_(None), order, tiebreak)
        .offset(offset)
        .limit(limit)
    )
    return [(row, worker) for row, worker in session.execute(query)]


KeyReader = Callable[[Session, Select], dict[int, Any]]


def _keyed_page(
    session: Session,
    base: Select,
    keys: KeyReader,
    desc: bool,
    offset: int,
    limit: int,
) -> list[tuple[TrialRow, str | None]]:
    """Sort the matching trials by keys computed here (None last either way), then load the
    page's rows."""
    found = keys(session, base)
    present = sorted((k for k in found.items() if k[1] is not None), key=lambda kv: kv[1])
    if desc:
        present.reverse()
    ordered = [i for i, _ in present] + sorted(i for i, k in found.items() if k is None)
    page = ordered[offset : offset + limit]
    ids = base.subquery()
    rows = session.execute(
        select(TrialRow, ids.c.worker)
        .join(ids, ids.c.id == TrialRow.id)
        .where(TrialRow.id.in_(page))
    )
    by_id = {row.id: (row, worker) for row, worker in rows}
    return [by_id[i] for i in page if i in by_id]


def _duration_keys(session: Session, base: Select) -> dict[int, Any]:
    ids = base.subquery()
    now = utcnow()
    rows = session.execute(
        select(TrialRow.id, TrialRow.started_at, TrialRow.finished_at, TrialRow.number).join(
            ids, ids.c.id == TrialRow.id
        )
    )
    return {
        trial_id: None if start is None else ((end or now) - start, number)
        for trial_id, start, end, number in rows
    }


def _param_keys(session: Session, base: Select, name: str) -> dict[int, Any]:
    """Sort keys of one parameter: numbers before text, then by value, then trial number."""
    ids = base.subquery()
    rows = session.execute(
        select(TrialRow.id, TrialRow.params, TrialRow.number).join(ids, ids.c.id == TrialRow.id)
    )
    keys: dict[int, Any] = {}
    for trial_id, params, number in rows:
        value = (params or {}).get(name)
        if value is None:
            keys[trial_id] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            keys[trial_id] = (0, value, "", number)
        else:
            keys[trial_id] = (1, 0, str(value), number)
    return keys
