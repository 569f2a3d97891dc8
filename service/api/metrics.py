"""`GET /metrics`: the service's state and HTTP traffic in Prometheus' text exposition format.

The counts of studies, trials, leases and workers are read from the database at scrape time,
so every server process behind one database reports the same numbers. The request counter and
latency histogram are kept in memory by `HttpMetrics`, one per app (so per server process): a
scraper of several processes sums them. Latency is measured until the response's headers are
sent, so a server-sent event stream counts the time it took to open, not how long it stayed open.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from sqlalchemy import case, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpo.protocol import StudyState, TrialState
from service.api.auth import user_access
from service.api.deps import Services, services_of
from service.storage.models import StudyRow, TrialRow, WorkerRow, utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Prometheus' default buckets, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WORKER_STATES = ("active", "stale", "gone")
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s), to bound labels

Labels = tuple[tuple[str, str], ...]


# -- the request histogram ---------------------------------------------------------------------


@dataclass
class _Series:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class HttpMetrics:
    """Request counts and latencies by (method, route template, status) in this process."""

    buckets: tuple[float, ...] = BUCKETS
    _series: dict[tuple[str, str, str], _Series] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series([0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    series.buckets[i] += 1
            series.total += seconds
            series.count += 1

    def snapshot(self) -> list[tuple[tuple[str, str, str], _Series]]:
        with self._lock:
            return [
                (key, _Series(list(s.buckets), s.total, s.count))
                for key, s in sorted(self._series.items())
            ]


class MetricsMiddleware:
    """Times every HTTP request and records it under its route template, not its path."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, elapsed = 500, None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status, elapsed = message["status"], time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            seconds = elapsed if elapsed is not None else time.perf_counter() - start
            self.metrics.observe(scope["method"], _route_of(scope), status, seconds)


def _route_of(scope: Scope) -> str:
    """The matched route's template; `/static/{path}` for a mounted app (FastAPI does not put
    a mount into `scope["route"]`, only its prefix into `root_path`); else `unmatched`."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    mount = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    return f"{mount}/{{path}}" if mount and "endpoint" in scope else UNMATCHED


def instrument(app: FastAPI) -> None:
    """Count and time every request of `app`; `GET /metrics` reports them."""
    metrics = HttpMetrics()
    app.state.http_metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)


# -- counts from the database ------------------------------------------------------------------


@dataclass
class Counts:
    studies: dict[str, int]
    trials: dict[str, int]
    trials_by_study: dict[str, dict[str, int]]
    leases_active: int
    leases_expired: int
    workers: dict[str, int]


def read_counts(services: Services, now: datetime) -> Counts:
    """Studies, trials, leases and workers by state, read in one transaction."""
    stale_before = now - timedelta(seconds=services.settings.stale_worker_seconds)
    with services.db.read() as session:
        studies = _zeros(s.value for s in StudyState)
        for state, n in session.execute(
            select(StudyRow.state, func.count()).group_by(StudyRow.state)
        ):
            studies[state] = n
        by_study = {
            name: _zeros(s.value for s in TrialState)
            for name in session.scalars(select(StudyRow.name))
        }
        rows = session.execute(
            select(StudyRow.name, TrialRow.state, func.count())
            .join(TrialRow, TrialRow.study_id == StudyRow.id)
            .group_by(StudyRow.name, TrialRow.state)
        )
        for name, state, n in rows:
            by_study.setdefault(name, _zeros(s.value for s in TrialState))[state] = n
        running = TrialRow.state == TrialState.RUNNING.value
        active = session.scalar(
            select(func.count()).where(running, TrialRow.lease_expires_at >= now)
        )
        expired = session.scalar(
            select(func.count()).where(running, TrialRow.lease_expires_at < now)
        )
        workers = _zeros(WORKER_STATES)
        unseen = func.sum(case((WorkerRow.last_seen_at < stale_before, 1), else_=0))
        for state, n, n_unseen in session.execute(
            select(WorkerRow.state, func.count(), unseen).group_by(WorkerRow.state)
        ):
            if state == "active":  # an active worker unseen for a while is stale
                workers["stale"] += int(n_unseen or 0)
                n -= int(n_unseen or 0)
            workers[state] = workers.get(state, 0) + n
    trials = _zeros(s.value for s in TrialState)
    for per_state in by_study.values():
        for state, n in per_state.items():
            trials[state] = trials.get(state, 0) + n
    return Counts(studies, trials, by_study, active or 0, expired or 0, workers)


def _zeros(keys: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


# -- the exposition format ---------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
    return f"{name}{{{inner}}} {_number(value)}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(_sample(name, labels, value) for labels, value in samples)
    return "\n".join(lines)


def _histogram(http: HttpMetrics) -> Iterator[str]:
    name = "hpo_http_request_duration_seconds"
    yield f"# HELP {name} Seconds until the response started, by method, route and status."
    yield f"# TYPE {name} histogram"
    snapshot = http.snapshot()
    for (method, route, status), series in snapshot:
        labels: Labels = (("method", method), ("route", route), ("status", status))
        for bound, n in zip(http.buckets, series.buckets, strict=True):
            yield _sample(f"{name}_bucket", (*labels, ("le", _bound(bound))), n)
        yield _sample(f"{name}_bucket", (*labels, ("le", "+Inf")), series.count)
        yield _sample(f"{name}_sum", labels, series.total)
        yield _sample(f"{name}_count", labels, series.count)
    yield _family(
        "hpo_http_requests_total",
        "counter",
        "HTTP requests answered by this server process, by method, route and status.",
        (
            ((("method", m), ("route", r), ("status", s)), series.count)
            for (m, r, s), series in snapshot
        ),
    )


def _bound(value: float) -> str:
    return repr(float(value))


def render(counts: Counts, http: HttpMetrics) -> str:
    """The whole exposition: one family per metric, HELP and TYPE first, a newline at the end."""
    parts = [
        _family(
            "hpo_studies",
            "gauge",
            "Studies by state.",
            (((("state", s),), n) for s, n in counts.studies.items()),
        ),
        _family(
            "hpo_trials",
            "gauge",
            "Trials by state, all studies.",
            (((("state", s),), n) for s, n in counts.trials.items()),
        ),
        _family(
            "hpo_study_trials",
            "gauge",
            "Trials by study and state.",
            (
                ((("study", study), ("state", s)), n)
                for study, per_state in sorted(counts.trials_by_study.items())
                for s, n in per_state.items()
            ),
        ),
        _family(
            "hpo_leases_active",
            "gauge",
            "Running trials whose lease has not expired.",
            [((), counts.leases_active)],
        ),
        _family(
            "hpo_leases_expired",
            "gauge",
            "Running trials whose lease expired and that wait to be queued again.",
            [((), counts.leases_expired)],
        ),
        _family(
            "hpo_workers",
            "gauge",
            "Registered workers: active, stale (no heartbeat lately) or gone (deregistered).",
            (((("state", s),), n) for s, n in counts.workers.items()),
        ),
        *_histogram(http),
    ]
    return "\n".join(parts) + "\n"


# -- the route -----------------------------------------------------------------------------------

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    dependencies=[Depends(user_access)],
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"},
        401: {"description": "tokens are set and the user token is missing"},
        403: {"description": "the worker token cannot read metrics"},
    },
)
def metrics(request: Request) -> Response:
    """Studies, trials, leases and workers by state (from the database) and this process's
    request counts and latencies, for Prometheus to scrape."""
    services = services_of(request)
    http: HttpMetrics = request.app.state.http_metrics
    text = render(read_counts(services, utcnow()), http)
    return Response(text, media_type=CONTENT_TYPE)
