"""Dependencies: the app's services, built once by `create_app` and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.domain.protocol import Protocol
from service.domain.studies import Studies
from service.settings import Settings
from service.storage.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    studies: Studies
    protocol: Protocol


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_studies(request: Request) -> Studies:
    return get_services(request).studies


def get_protocol(request: Request) -> Protocol:
    return get_services(request).protocol


def get_settings(request: Request) -> Settings:
    return get_services(request).settings
