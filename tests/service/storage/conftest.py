"""A migrated database of the service's own tables for the store contract tests, on SQLite and
(with HPO_TEST_POSTGRES_URL) on PostgreSQL: `database_url` is parametrized by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.storage import migrate
from service.storage.db import Database
from tests.conftest import postgres_database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, busy_timeout_s=5.0)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    """A migrated PostgreSQL database alone, for what only PostgreSQL has (row locks that
    let two writers in at once); skipped, like the suite's PostgreSQL half, without one."""
    with postgres_database() as url:
        database = Database(url, busy_timeout_s=5.0)
        migrate.upgrade(database.engine)
        yield database
        database.dispose()
