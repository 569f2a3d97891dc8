"""Dependencies: the app's services, built once by `create_app` and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Request

from service.api.schemas import MAX_ID
from service.domain.protocol import Protocol
from service.domain.studies import Studies
from service.settings import Settings
from service.storage.db import Database

# A study, trial or worker id in a path: out of the id range is 422, not a database error.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@dataclass
class Services:
    settings: Settings
    db: Database
    studies: Studies
    protocol: Protocol


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# `async def` although they await nothing: FastAPI runs a plain `def` dependency in the thread
# pool, a hop per dependency per request, for what is an attribute lookup.
async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_studies(request: Request) -> Studies:
    return services_of(request).studies


async def get_protocol(request: Request) -> Protocol:
    return services_of(request).protocol


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings
