"""The domain tests' services: built on the test's database (SQLite, then PostgreSQL), with a
clock the test sets by hand."""

from __future__ import annotations

import pytest

from service.api.deps import Services
from service.app import build_services
from service.settings import Settings
from tests.support.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def services(settings: Settings, clock: Clock) -> Services:
    """The services with default settings (30 s leases, 3 attempts) on `settings`' database,
    reading `clock`."""
    svc = build_services(Settings(database_url=settings.database_url))
    svc.protocol.context.clock = clock
    return svc
