"""Serving the app: `hpo server` in one process, or `hpo server --processes N` in N.

N processes are uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`): the parent binds
the socket once, starts N children that accept on it, restarts a child that dies or stops
answering, and on SIGTERM/SIGINT stops them all (each finishes its requests, as one process
does). Uvicorn re-imports the app in each child from an import string, so the children read
their settings from the environment the parent prepared (`server_process_app`).

What must run once is safe when N processes, or N machines, run it: the parent migrates before
any child starts (and migrations hold an advisory lock, for N machines); every process runs the
reaper, whose row locks hand each expired lease to one of them; the event stream reads the
event table by id; the sampler's ask holds a per-study advisory lock
(`service.storage.locks.sampling`); `/metrics` sums every process's request metrics through
prometheus_client's multiprocess mode, in a folder the parent creates.

SQLite stays one process: it has one writer at a time, and nothing would be gained.

Each serving process settles its heap once its app is built (`settle_heap`): the garbage
collector's full collections had to walk every object of the imported libraries, 70 to 300 ms
with every thread stopped, a few times a minute under load (docs/BENCHMARKS.md "Round 7:
PostgreSQL's tail at 1024 in flight").
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from hpo import logs
from service.api.metrics import MULTIPROCESS_DIR
from service.app import create_app
from service.settings import Settings
from service.storage import migrate
from service.storage.dialect import is_sqlite

# How the parent tells its children how to log (`FORMAT:LEVEL`); set by `serve`, for them only.
CHILD_LOG = "HPO_SERVER_PROCESS_LOG"
# Open event streams (the page) never end by themselves: on SIGTERM give requests a few
# seconds, then close the streams; the page reconnects to the next server.
GRACEFUL_SECONDS = 5
# How long the supervisor waits for a child to answer its health check before it replaces it:
# generous, because a busy 2-core box can hold a child's GIL for a while.
HEALTHCHECK_SECONDS = 30
# Allocations between two collections of the youngest generation (Python's default: 700). A
# batched report of 128 items makes tens of thousands of objects that live for its ~100 ms;
# collected every 700 allocations, many of them outlived two collections and reached the
# oldest generation, whose growth then triggered a full collection every second or two.
GC_YOUNG_THRESHOLD = 10_000


class ProcessesRefused(ValueError):
    """`--processes` above 1 on a database that allows one server process; the message says
    why and what to do."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    processes: int = 1
    log_format: str = "text"
    log_level: str = "warning"


def check_processes(settings: Settings, processes: int) -> None:
    """Raise ProcessesRefused when `processes` server processes cannot share the database."""
    if processes > 1 and is_sqlite(settings.database_url):
        raise ProcessesRefused(
            f"--processes {processes} needs PostgreSQL: SQLite has one writer at a time, so "
            "the server runs as one process on it; set HPO_DATABASE_URL (or --database-url) "
            "to a postgresql+psycopg:// URL, or leave --processes at 1"
        )


def settle_heap() -> None:
    """Once the process's app is built: collect, then move every object alive now (the
    imported libraries, the app, its engines) out of the collector's reach for good
    (`gc.freeze`), so that a full collection walks only what the requests made since; and
    collect the youngest generation every GC_YOUNG_THRESHOLD allocations, so that a request's
    short-lived objects die young instead of being promoted. A full collection of a served
    process took 70 to 300 ms before (every thread stopped; a few times a minute at 1024
    trials in flight), under 40 ms after."""
    gc.collect()
    gc.freeze()
    _young, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def serve(app: FastAPI, listen: Listen) -> None:
    """Serve `app` in this process until SIGTERM/SIGINT."""
    settle_heap()
    uvicorn.run(app, **_uvicorn_options(listen))


def serve_processes(
    settings: Settings, listen: Listen, migrated: Callable[[], None] = lambda: None
) -> None:
    """Migrate (then call `migrated`), then serve in `listen.processes` processes until
    SIGTERM/SIGINT. Raises ProcessesRefused (SQLite) and DatabaseUnavailable."""
    check_processes(settings, listen.processes)
    migrate.prepare(
        settings.database_url,
        wait_seconds=settings.database_wait_seconds,
        busy_timeout_s=settings.sqlite_busy_timeout_s,
    )
    migrated()
    own_metrics_dir = None
    if not os.environ.get(MULTIPROCESS_DIR):  # the user's own folder is theirs to empty
        own_metrics_dir = tempfile.mkdtemp(prefix="hpo-metrics-")
        os.environ[MULTIPROCESS_DIR] = own_metrics_dir
    # The children read these (uvicorn pickles the config, not our settings).
    os.environ["HPO_DATABASE_URL"] = settings.database_url
    os.environ[CHILD_LOG] = f"{listen.log_format}:{listen.log_level}"
    config = uvicorn.Config(
        f"{__name__}:server_process_app",
        factory=True,
        workers=listen.processes,
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
        **_uvicorn_options(listen),
    )
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def server_process_app() -> FastAPI:
    """The app of one of `serve_processes`' children (uvicorn's factory): settings from the
    environment the parent prepared; the parent migrated already."""
    log_format, _, log_level = os.environ.get(CHILD_LOG, "text:warning").partition(":")
    logs.configure(log_format, log_level)
    app = create_app(Settings.from_env(), run_migrations=False)
    settle_heap()
    return app


def _uvicorn_options(listen: Listen) -> dict[str, Any]:
    return {
        "host": listen.host,
        "port": listen.port,
        "log_level": listen.log_level,
        "log_config": logs.uvicorn_log_config(listen.log_format),
        "access_log": listen.log_level == "debug",
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    }
