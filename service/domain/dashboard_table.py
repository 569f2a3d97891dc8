"""The page's trial table: one page of a study's trials, sorted and filtered, with offset paging
and a total (the page shows "51-100 of 9,812").

Sorting by a column happens in SQL. Sorting by duration or by a parameter reads just the keys of
every matching trial (two small columns), sorts them here and then loads the one page: a few tens
of milliseconds for 10,000 trials, the same on every database. The queries are the store's
(`service.storage.trial_table`); this module reads the query and decides the order. No FastAPI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hpo.protocol import TrialState
from service.domain.dashboard import load_study
from service.domain.errors import InvalidInput
from service.storage.db import Database
from service.storage.models import TrialRow, utcnow
from service.storage.trial_table import COLUMNS, Row, TableFilter, TrialTableStore
from service.storage.unit import reading

MAX_LIMIT = 500
SORTS = (*COLUMNS, "duration", "param:<name>")
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
        where = _filter(study_id, query)
        limit = max(1, min(query.limit, MAX_LIMIT))
        offset = max(0, query.offset)
        with reading(self.db) as stores:
            load_study(stores, study_id)
            total = stores.table.count(where)
            rows = sorter(stores.table, where, query.descending, offset, limit)
        now = utcnow()
        items = [TableRow(row, worker, duration_s(row, now)) for row, worker in rows]
        return TablePage(total=total, offset=offset, limit=limit, items=items)


Sorter = Callable[[TrialTableStore, TableFilter, bool, int, int], list[Row]]
KeyReader = Callable[[TrialTableStore, TableFilter], dict[int, Any]]


def _sorter(sort: str) -> Sorter:
    if sort in COLUMNS:
        return lambda table, where, desc, offset, limit: table.page_by_column(
            where, sort, desc, offset, limit
        )
    if sort == "duration":
        return lambda table, where, desc, offset, limit: _keyed_page(
            table, where, _duration_keys, desc, offset, limit
        )
    if sort.startswith("param:") and len(sort) > len("param:"):
        name = sort[len("param:") :]
        return lambda table, where, desc, offset, limit: _keyed_page(
            table, where, lambda t, w: _param_keys(t, w, name), desc, offset, limit
        )
    raise InvalidInput(("sort",), f"cannot sort by '{sort}'; use one of {', '.join(SORTS)}")


def _states(states: tuple[str, ...]) -> tuple[TrialState, ...]:
    known = {s.value for s in TrialState}
    unknown = [s for s in states if s not in known]
    if unknown:
        raise InvalidInput(
            ("state",), f"unknown trial state '{unknown[0]}'; use {', '.join(sorted(known))}"
        )
    return tuple(TrialState(s) for s in states)


def _filter(study_id: int, query: TableQuery) -> TableFilter:
    """The store's filter for the query: its states checked and its text read as tokens."""
    numbers: list[int] = []
    params: list[tuple[str, str]] = []
    texts: list[str] = []
    for token in query.text.split():
        if token.startswith("#"):
            if not token[1:].isdigit():
                raise InvalidInput(("q",), f"'{token}': write a trial number as #12")
            numbers.append(int(token[1:]))
        elif match := _PARAM_TOKEN.match(token):
            name, value = match.groups()
            params.append((name, value))
        else:
            texts.append(token)
    return TableFilter(
        study_id,
        states=_states(query.states),
        bracket=query.bracket,
        rung=query.rung,
        reached=query.reached,
        numbers=tuple(numbers),
        params=tuple(params),
        texts=tuple(texts),
    )


def _keyed_page(
    table: TrialTableStore,
    where: TableFilter,
    keys: KeyReader,
    desc: bool,
    offset: int,
    limit: int,
) -> list[Row]:
    """Sort the matching trials by keys computed here (None last either way), then load the
    page's rows."""
    found = keys(table, where)
    present = sorted((k for k in found.items() if k[1] is not None), key=lambda kv: kv[1])
    if desc:
        present.reverse()
    ordered = [i for i, _ in present] + sorted(i for i, k in found.items() if k is None)
    page = ordered[offset : offset + limit]
    by_id = table.rows(where, page)
    return [by_id[i] for i in page if i in by_id]


def _duration_keys(table: TrialTableStore, where: TableFilter) -> dict[int, Any]:
    now = utcnow()
    return {
        trial_id: None if start is None else ((end or now) - start, number)
        for trial_id, start, end, number in table.times(where)
    }


def _param_keys(table: TrialTableStore, where: TableFilter, name: str) -> dict[int, Any]:
    """Sort keys of one parameter: numbers before text, then by value, then trial number."""
    keys: dict[int, Any] = {}
    for trial_id, params, number in table.params(where):
        value = params.get(name)
        if value is None:
            keys[trial_id] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            keys[trial_id] = (0, value, "", number)
        else:
            keys[trial_id] = (1, 0, str(value), number)
    return keys
