"""What the parts of the worker protocol share: the database, Optuna's storage, the settings,
the artifacts folder, the trial transitions and one clock (tests replace `clock`; every part
reads it through here, so all of them see the same time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from optuna.storages import RDBStorage

from service.domain.transitions import Transitions
from service.settings import Settings
from service.storage.artifacts import ArtifactStore
from service.storage.db import Database
from service.storage.models import utcnow


class ProtocolContext:
    def __init__(
        self,
        db: Database,
        storage: RDBStorage,
        settings: Settings,
        artifacts: ArtifactStore,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.artifacts = artifacts
        self.clock = clock
        self.transitions = Transitions(storage, artifacts, lambda: self.clock())

    def lease_until(self, now: datetime) -> datetime:
        """When a lease taken or renewed at `now` expires."""
        return now + timedelta(seconds=self.settings.lease_seconds)
