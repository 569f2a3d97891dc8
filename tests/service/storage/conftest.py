"""A migrated database of the service's own tables for the store contract tests, on SQLite and
(with HPO_TEST_POSTGRES_URL) on PostgreSQL: `database_url` is parametrized by tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.storage import migrate
from service.storage.db import Database


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, busy_timeout_s=5.0)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()
