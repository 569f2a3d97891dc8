"""SQLite's writers in the one server process queue in arrival order (service/storage/
write_queue.py): requests that arrive while another transaction writes are served first come,
first served, whether that transaction is the service's or Optuna's, with no `database is
locked` and no 503; reads do not queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.storage.db import Database, open_optuna_storage
from service.storage.write_queue import WriteQueue, queue_for
from tests.conftest import spec_doc, wait_for
from tests.reliability.conftest import serving

WRITERS = 10  # under the engine pool's 15 connections: each waiter holds one


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "hpo.db"
    settings = Settings(database_url=f"sqlite:///{db}", artifacts_dir=tmp_path / "a")
    with serving(create_app(settings, reaper=False)) as url:
        yield url, db


def _queue_behind(holder: AbstractContextManager[Any], db: Path, url: str) -> list[int]:
    """While `holder` (an open write transaction) holds the file, register WRITERS workers,
    each request sent once the one before it waits in the queue; the status of each."""
    queue = queue_for(str(db))
    assert queue is not None
    statuses: list[int] = [0] * WRITERS

    def register(i: int) -> None:
        reply = httpx.post(f"{url}/api/v1/workers/register", json={"name": f"w{i}"}, timeout=60)
        statuses[i] = reply.status_code

    threads = [threading.Thread(target=register, args=(i,)) for i in range(WRITERS)]
    with holder:
        for i, thread in enumerate(threads):
            thread.start()
            wait_for(lambda i=i: queue.waiting == i + 1, 30, f"writer {i} in the queue", 0.005)
        # Reads go on while the writers wait.
        studies = httpx.get(f"{url}/api/v1/studies", timeout=30)
        assert studies.status_code == 200 and queue.waiting == WRITERS
        time.sleep(0.3)  # longer than SQLite's busy handler's first sleeps
    for thread in threads:
        thread.join(60)
    return statuses


def _registered(url: str) -> list[str]:
    workers = httpx.get(f"{url}/api/v1/workers", timeout=30).json()
    return [w["name"] for w in sorted(workers, key=lambda w: w["id"])]


def test_writers_behind_a_service_transaction_are_served_in_arrival_order(
    server: tuple[str, Path],
) -> None:
    url, db = server
    other = Database(f"sqlite:///{db}")  # the same file, so the same queue, as the app's
    assert httpx.post(f"{url}/api/v1/studies", json=spec_doc(), timeout=30).status_code == 201

    assert _queue_behind(_Transaction(other), db, url) == [201] * WRITERS
    assert _registered(url) == [f"w{i}" for i in range(WRITERS)]
    other.dispose()


def test_writers_behind_an_optuna_transaction_are_served_in_arrival_order(
    server: tuple[str, Path],
) -> None:
    url, db = server
    storage = open_optuna_storage(f"sqlite:///{db}")  # Optuna's engine on the file
    assert _queue_behind(storage.engine.begin(), db, url) == [201] * WRITERS
    assert _registered(url) == [f"w{i}" for i in range(WRITERS)]
    storage.engine.dispose()


class _Transaction:
    """An open write transaction of a `Database` (BEGIN IMMEDIATE sent), as a context."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.context = self.db.write()
        session = self.context.__enter__()
        session.connection()

    def __exit__(self, *exc: object) -> None:
        self.context.__exit__(None, None, None)


def test_the_queue_is_reentrant_per_thread_and_times_out_as_sqlite_did() -> None:
    queue = WriteQueue()
    queue.acquire(1.0)
    queue.acquire(1.0)  # a second transaction of the same thread passes
    errors: list[BaseException] = []

    def other() -> None:
        try:
            queue.acquire(0.2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert [str(e) for e in errors] == ["database is locked"] and queue.waiting == 0
    queue.release()
    queue.release()
    got: list[str] = []
    thread = threading.Thread(target=lambda: (queue.acquire(1.0), got.append("turn")))
    thread.start()
    thread.join(10)
    assert got == ["turn"]  # the queue went back to free after the timed-out waiter left
