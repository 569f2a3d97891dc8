"""The workers table: one row per registered device process."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpo.protocol import WorkerState
from service.storage.models import WorkerRow


class WorkerStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(
        self,
        name: str,
        host: str,
        pid: int | None,
        device: str,
        capabilities: dict[str, Any],
        now: datetime,
    ) -> WorkerRow:
        worker = WorkerRow(
            name=name,
            host=host,
            pid=pid,
            device=device,
            capabilities=capabilities,
            state=WorkerState.ACTIVE,
            registered_at=now,
            last_seen_at=now,
        )
        self.session.add(worker)
        self.session.flush()
        return worker

    def get(self, worker_id: int) -> WorkerRow | None:
        return self.session.get(WorkerRow, worker_id)

    def all(self) -> list[WorkerRow]:
        """Every worker ever registered, gone ones too, by id."""
        return list(self.session.scalars(select(WorkerRow).order_by(WorkerRow.id)))

    def in_state(self, state: WorkerState) -> list[WorkerRow]:
        query = select(WorkerRow).where(WorkerRow.state == state).order_by(WorkerRow.id)
        return list(self.session.scalars(query))

    def capabilities(self) -> list[dict[str, Any]]:
        """The plugin names of every registered worker."""
        return [caps or {} for caps in self.session.scalars(select(WorkerRow.capabilities))]

    def names(self, ids: Collection[int | None]) -> dict[int, str]:
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        query = select(WorkerRow.id, WorkerRow.name).where(WorkerRow.id.in_(wanted))
        return {worker_id: name for worker_id, name in self.session.execute(query)}
