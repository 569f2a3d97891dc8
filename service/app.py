"""The FastAPI application: `create_app(settings)` builds everything from injected settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.api import (
    auth,
    dashboard,
    docs,
    errors,
    events,
    exports,
    metrics,
    studies,
    trial_models,
    tunables,
    workers,
)
from service.api.deps import Services
from service.api.limits import BodyLimit
from service.api.report_groups import (
    POSTGRES_GROUPED_ITEMS,
    POSTGRES_SIDE_BY_SIDE,
    ReportGroups,
)
from service.api.report_path import BatchedReports
from service.domain.context import ProtocolContext
from service.domain.protocol import Protocol
from service.domain.studies import Studies
from service.settings import Settings
from service.storage import migrate
from service.storage.artifacts import ArtifactStore
from service.storage.db import Database, open_optuna_storage
from service.storage.dialect import is_sqlite

log = logging.getLogger("hpo.server")
WEB = Path(__file__).parent / "web"


def _reaper(protocol: Protocol, every: float, stop: threading.Event) -> None:
    """Take back expired leases even when no worker is asking for work, and end what a
    stopped server left running in Optuna (a lease's Optuna trials it did not finish, a
    finished trial's tell): once at start-up, then every round."""
    while True:
        try:
            tidied = protocol.reaping.tidy_optuna()
            if tidied.ended:
                log.warning(
                    "ended %d orphaned Optuna trial(s) FAIL (see hpo:orphaned)", tidied.ended
                )
            if tidied.told:
                log.warning("told Optuna the end of %d finished trial(s) again", tidied.told)
        except Exception:  # retried next round
            log.exception("ending what a stopped server left in Optuna failed")
        if stop.wait(every):
            return
        try:
            protocol.reaping.reap()
        except Exception:  # keep reaping; a busy database is retried next round
            log.exception("reaping expired leases failed")


def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    if run_migrations:  # waits for the database; one process at a time
        migrate.prepare(
            settings.database_url,
            wait_seconds=settings.database_wait_seconds,
            busy_timeout_s=settings.sqlite_busy_timeout_s,
        )
    db = Database(settings.database_url, settings.sqlite_busy_timeout_s)
    storage = open_optuna_storage(settings.database_url, settings.sqlite_busy_timeout_s)
    artifacts = ArtifactStore(settings.artifacts_dir, settings.max_checkpoint_bytes)
    protocol = Protocol(ProtocolContext(db, storage, settings, artifacts))
    return Services(
        settings=settings,
        db=db,
        studies=Studies(
            db, storage, protocol.context.transitions, artifacts, settings.stale_worker_seconds
        ),
        protocol=protocol,
    )


def create_app(settings: Settings, *, run_migrations: bool = True, reaper: bool = True) -> FastAPI:
    services = build_services(settings, run_migrations=run_migrations)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if reaper:
            every = max(0.5, settings.lease_seconds / 3)
            threading.Thread(
                target=_reaper,
                args=(services.protocol, every, stop),
                name="hpo-reaper",
                daemon=True,
            ).start()
        yield
        stop.set()
        services.db.dispose()

    app = FastAPI(
        title="hpo",
        summary="Self-hosted hyperparameter optimization: studies, trials, workers.",
        version="0.1.0",
        lifespan=lifespan,
        responses=errors.COMMON_ERRORS,
        # served by service.api.docs instead: from the package, behind the user token
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    # Added first, so inside the body limit and the metrics: the batched report's short way.
    # Its batches are written by one thread per process, those that wait for it together
    # (a group commit; service/api/report_groups.py); on PostgreSQL only the small ones, the
    # others side by side in the thread pool, a few at a time.
    groups = (
        ReportGroups()
        if is_sqlite(settings.database_url)
        else ReportGroups(
            max_batch_items=POSTGRES_GROUPED_ITEMS, side_by_side=POSTGRES_SIDE_BY_SIDE
        )
    )
    app.state.report_groups = groups
    app.add_middleware(BatchedReports, owner=app, groups=groups)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        checkpoint_bytes=settings.max_checkpoint_bytes,
    )
    errors.install(app)
    metrics.instrument(app)
    app.include_router(auth.router)
    app.include_router(studies.router)
    app.include_router(exports.router)
    app.include_router(trial_models.router)
    app.include_router(trial_models.protocol_router)
    app.include_router(events.router)
    app.include_router(tunables.router)
    app.include_router(workers.router)
    app.include_router(workers.protocol_router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    return app
