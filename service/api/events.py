"""GET /api/v1/studies/{id}/events: server-sent events read from the study's event log.

The log is a table, so any server process can serve any client, and a client that reconnects
with `Last-Event-ID` gets exactly what it missed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api.auth import user_access
from service.api.deps import IdPath, Services, get_services
from service.api.schemas import MAX_ID
from service.api.serializers import finite
from service.domain.errors import NotFound
from service.storage.models import EventRow, StudyRow

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(user_access)])
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
BATCH = 500


def _read(services: Services, study_id: int, after: int) -> list[EventRow]:
    with services.db.read() as session:
        query = (
            select(EventRow)
            .where(EventRow.study_id == study_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(BATCH)
        )
        return list(session.scalars(query))


def _exists(services: Services, study_id: int) -> bool:
    with services.db.read() as session:
        return session.get(StudyRow, study_id) is not None


def _format(event: EventRow) -> str:
    data = {
        "id": event.id,
        "kind": event.kind,
        "trial_id": event.trial_id,
        "at": event.created_at.isoformat(),
        **finite(event.payload),
    }
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"


@router.get(
    "/studies/{study_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def study_events(
    request: Request,
    study_id: IdPath,
    services: Annotated[Services, Depends(get_services)],
    last_event_id: Annotated[int, Header(ge=0, le=MAX_ID)] = 0,
) -> StreamingResponse:
    """Trial started / reported / state / finished and study state events, in order."""
    if not await run_in_threadpool(_exists, services, study_id):
        raise NotFound(f"study {study_id} not found")

    async def stream() -> AsyncIterator[str]:
        after = last_event_id
        idle = 0.0
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            events = await run_in_threadpool(_read, services, study_id, after)
            for event in events:
                yield _format(event)
                after, idle = event.id, 0.0
            if len(events) < BATCH:
                if idle >= KEEPALIVE_SECONDS:  # keeps proxies from closing a quiet stream
                    yield ": keep-alive\n\n"
                    idle = 0.0
                await asyncio.sleep(POLL_SECONDS)
                idle += POLL_SECONDS

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
