"""GET /api/v1/studies/{id}/events: server-sent events read from the study's event log, sent
with FastAPI's `EventSourceResponse` (which also sends a keep-alive comment on a quiet stream,
so that proxies do not close it).

The log is a table, so any server process can serve any client, and a client that reconnects
with `Last-Event-ID` gets exactly what it missed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from service.api.auth import user_access
from service.api.deps import IdPath, Services, get_services
from service.api.errors import JSON_ERRORS
from service.api.schemas import MAX_ID
from service.api.serializers import finite
from service.domain.errors import NotFound
from service.storage.models import EventRow
from service.storage.unit import reading

router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(user_access)])
POLL_SECONDS = 0.5
BATCH = 500
RETRY_MS = 2000  # how long a browser waits before it reconnects


def _read(services: Services, study_id: int, after: int) -> list[EventRow]:
    with reading(services.db) as stores:
        return stores.events.after(study_id, after, BATCH)


def _exists(services: Services, study_id: int) -> bool:
    with reading(services.db) as stores:
        return stores.studies.get(study_id) is not None


async def existing_study(
    study_id: IdPath, services: Annotated[Services, Depends(get_services)]
) -> int:
    """The study id, checked before the stream opens (404 rather than an empty stream)."""
    if not await run_in_threadpool(_exists, services, study_id):
        raise NotFound(f"study {study_id} not found")
    return study_id


def _event(event: EventRow) -> ServerSentEvent:
    data = {
        "id": event.id,
        "kind": event.kind,
        "trial_id": event.trial_id,
        "at": event.created_at.isoformat(),
        **finite(event.payload),
    }
    return ServerSentEvent(id=str(event.id), event=event.kind, data=data)


@router.get("/studies/{study_id}/events", response_class=EventSourceResponse, responses=JSON_ERRORS)
async def study_events(
    study_id: Annotated[int, Depends(existing_study)],
    services: Annotated[Services, Depends(get_services)],
    last_event_id: Annotated[int, Header(ge=0, le=MAX_ID)] = 0,
) -> AsyncIterator[ServerSentEvent]:
    """Trial started / reported / state / finished and study state events, in order."""
    after = last_event_id
    yield ServerSentEvent(retry=RETRY_MS)
    while True:  # ends when the client goes: the response cancels this generator
        events = await run_in_threadpool(_read, services, study_id, after)
        for event in events:
            yield _event(event)
            after = event.id
        if len(events) < BATCH:
            await asyncio.sleep(POLL_SECONDS)
