"""Batched reports: one writer thread per server process, and the batches that wait for it
written together in one transaction (a group commit).

On SQLite a batched report is one write transaction from its `BEGIN IMMEDIATE` on, and the
server's writers take their turn in the file's write queue, so batches of several workers
never ran side by side: each waited for the others in a pool thread. On PostgreSQL they did
run side by side, but small ones gained nothing from it: 8 pool threads each holding a batch
of 8 items spent most of their time waiting for the GIL and for the cores, and each paid the
same fixed cost (a session, 6 statements, a commit: about 2 of a batch of 8's 2.5 ms). So on
PostgreSQL a batch of at most `max_batch_items` (POSTGRES_GROUPED_ITEMS) items waits for the
writer, and a larger one, whose fixed cost is a small part of it, still runs in the app's
thread pool beside the others (one writer for 8 batches of 128 recorded fewer trial-epochs:
PostgreSQL's statements no longer overlapped the Python of other batches), but at most
`side_by_side` (POSTGRES_SIDE_BY_SIDE) at once, first come, first served: with 8 at once the
slowest waited for the GIL at each of its statements behind 7 others, and the p99 at 1024
trials in flight was 1.4 to 2.7 times the median (docs/BENCHMARKS.md "Round 7: PostgreSQL's
tail at 1024 in flight"). What a batch of 8 items
costs the server is mostly the same whatever its size (a session, 6 statements, a commit;
about 1.2 of its 1.5 to 1.9 ms in process, 0.06 ms an item more, docs/BENCHMARKS.md "Where a
request's CPU goes, round 6"), so the batches that came while the last one was written are
written next as one: one `report_many` call over their items, each batch answered its own
slice of the outcomes.

Every guarantee of a batch holds as if it were written alone:

- items are judged one by one inside `report_many` (a stale token, an unknown trial, a
  finished one: that item's error; the others are written), so a batch's answer does not
  depend on the batches written with it;
- batches are merged only while their trials are disjoint (a trial's last item in a batch is
  where a stopped study pauses it: with two batches of one trial merged, the first's would no
  longer be its last) and in arrival order: a batch that shares a trial with the group, or
  whose call is another function, starts the next group;
- when the merged call raises, nothing of the group was written (the unit of work rolls back
  its transaction), and each batch is written alone, so an exception caused by one batch is
  that batch's answer only. The one exception left shared is `OperationalError` (a busy or
  unreachable database, answered 503 to retry): every batch of the group gets it, since
  trying each alone would wait out the busy timeout once a batch. A failure after the commit
  (a study with a pruner asks it after) leaves the reports stored, and the batches written
  alone then repeat them, which changes nothing (a report is idempotent per epoch).

On PostgreSQL the merged transaction locks its studies and then its trials in the lock order
(service/storage/locks.py), as each batch alone would, so it closes no new deadlock cycle with
other transactions; two server processes each write their own groups side by side.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy.exc import OperationalError

from hpo.protocol import TrialReport

REPORTS_THREAD = "hpo-reports"  # the name of the writer thread
MAX_GROUP_ITEMS = 1024  # items in one merged transaction at most (a batch alone may be more)
# PostgreSQL: the largest batch that waits for the writer; a larger one runs in the thread pool,
# at most POSTGRES_SIDE_BY_SIDE such batches at once.
POSTGRES_GROUPED_ITEMS = 32
POSTGRES_SIDE_BY_SIDE = 4

Outcomes = list[Any]  # report_many's: a Decision or a DomainError per item
ReportMany = Callable[[Sequence[TrialReport]], Outcomes]


@dataclass
class _Waiting:
    """One batch waiting for the writer: its items, the call, and where its answer goes."""

    items: Sequence[TrialReport]
    report_many: ReportMany
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcomes]

    def answer(self, outcomes: Outcomes) -> None:
        self._settle(lambda: self.future.set_result(outcomes))

    def fail(self, exc: BaseException) -> None:
        self._settle(lambda: self.future.set_exception(exc))

    def _settle(self, settle: Callable[[], None]) -> None:
        def on_loop() -> None:
            if not self.future.done():  # a cancelled request (its client left) hears nothing
                settle()

        with suppress(RuntimeError):  # the loop closed meanwhile: no one is waiting
            self.loop.call_soon_threadsafe(on_loop)


class ReportGroups:
    """The batched reports of one server process (see the module's docstring). A batch of
    more than `max_batch_items` items (None: no limit) runs in the thread pool instead of on
    the writer, at most `side_by_side` such batches at once (None: the pool's own limit)."""

    def __init__(
        self,
        max_items: int = MAX_GROUP_ITEMS,
        max_batch_items: int | None = None,
        side_by_side: int | None = None,
    ) -> None:
        self.max_items = max_items
        self.max_batch_items = max_batch_items
        self.side_by_side = side_by_side
        self._limiter: tuple[asyncio.AbstractEventLoop, anyio.CapacityLimiter] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=REPORTS_THREAD)
        self._waiting: deque[_Waiting] = deque()
        self._lock = threading.Lock()

    def takes(self, items: Sequence[TrialReport]) -> bool:
        """Whether a batch of `items` waits for the writer (else it runs in the thread pool,
        beside the writer)."""
        return self.max_batch_items is None or len(items) <= self.max_batch_items

    async def report(self, report_many: ReportMany, items: Sequence[TrialReport]) -> Outcomes:
        """`report_many(items)`'s outcomes, written by the writer thread, maybe in one
        transaction with other batches, or in the thread pool for a batch the writer does
        not take; raises what that call alone would raise."""
        loop = asyncio.get_running_loop()
        if not self.takes(items):
            return await self._beside(loop, report_many, items)
        waiting = _Waiting(items, report_many, loop, loop.create_future())
        with self._lock:
            self._waiting.append(waiting)
        self._thread.submit(self._write)
        return await waiting.future

    async def _beside(
        self, loop: asyncio.AbstractEventLoop, report_many: ReportMany, items: Sequence[TrialReport]
    ) -> Outcomes:
        """`report_many(items)` in the thread pool, at most `side_by_side` at once, in the
        order they came (anyio's limiter is first come, first served)."""
        if self.side_by_side is None:
            return await anyio.to_thread.run_sync(report_many, items)
        if self._limiter is None or self._limiter[0] is not loop:  # one limiter per loop
            self._limiter = (loop, anyio.CapacityLimiter(self.side_by_side))
        return await anyio.to_thread.run_sync(report_many, items, limiter=self._limiter[1])

    def _write(self) -> None:
        """Write every batch waiting now (an earlier call may have taken them all)."""
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        for group in groups(taken, self.max_items):
            _write_group(group)


def groups(waiting: list[_Waiting], max_items: int) -> Iterator[list[_Waiting]]:
    """`waiting` cut, in order, into groups of batches with disjoint trials, one call, and at
    most `max_items` items (a batch alone may be longer)."""
    group: list[_Waiting] = []
    trials: set[int] = set()
    size = 0
    for batch in waiting:
        ids = {item.trial_id for item in batch.items}
        if group and (
            batch.report_many != group[0].report_many
            or not trials.isdisjoint(ids)
            or size + len(batch.items) > max_items
        ):
            yield group
            group, trials, size = [], set(), 0
        group.append(batch)
        trials |= ids
        size += len(batch.items)
    if group:
        yield group


def _write_group(group: list[_Waiting]) -> None:
    if len(group) == 1:
        _write_alone(group[0])
        return
    merged = [item for batch in group for item in batch.items]
    try:
        outcomes = group[0].report_many(merged)
    except OperationalError as exc:  # the database is busy or unreachable: retry, all
        for batch in group:
            batch.fail(exc)
        return
    except Exception:  # rolled back: each alone, so that only its cause hears it
        for batch in group:
            _write_alone(batch)
        return
    start = 0
    for batch in group:
        batch.answer(outcomes[start : start + len(batch.items)])
        start += len(batch.items)


def _write_alone(batch: _Waiting) -> None:
    try:
        outcomes = batch.report_many(batch.items)
    except Exception as exc:
        batch.fail(exc)
        return
    batch.answer(outcomes)
