"""`GET /metrics`: the service's state and HTTP traffic for Prometheus, with `prometheus_client`.

The counts of studies, trials, leases and workers are read from the database at scrape time (a
custom collector), so every server process behind one database reports the same numbers. The
request counter and latency histogram are `prometheus_client` metrics, one set per app: kept in
this process's memory, or, when PROMETHEUS_MULTIPROC_DIR is set (several server processes),
in that folder's files, which a scrape of any process sums over all of them (the library's
multiprocess mode). Latency is measured until the response's headers are sent, so a server-sent
event stream counts the time it took to open, not how long it stayed open.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import user_access
from service.api.deps import services_of
from service.domain.counts import Counts, read_counts
from service.storage.models import utcnow

# What `generate_latest` writes: the classic text format (not OpenMetrics).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Prometheus' classic default buckets, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s), to bound labels
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
LABELS = ("method", "route", "status")


# -- the request metrics -------------------------------------------------------------------------


class HttpMetrics:
    """Request counts and latencies by (method, route template, status) of one app."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hpo_http_requests",
            "HTTP requests answered by this server process, by method, route and status.",
            LABELS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "hpo_http_request_duration_seconds",
            "Seconds until the response started, by method, route and status.",
            LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        """This process's request metrics, or every process's in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


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
    # A `_created` timestamp per series is OpenMetrics' business, not the text format's.
    disable_created_metrics()
    metrics = HttpMetrics()
    app.state.http_metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)


# -- counts from the database ------------------------------------------------------------------


class StateCollector(Collector):
    """The gauges of studies, trials, leases and workers, from counts read at scrape time."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        studies = GaugeMetricFamily("hpo_studies", "Studies by state.", labels=["state"])
        for study_state, n in counts.studies.items():
            studies.add_metric([study_state.value], n)
        yield studies
        trials = GaugeMetricFamily(
            "hpo_trials",
            "Trials by state, all studies (state queued: trials waiting for a worker).",
            labels=["state"],
        )
        for trial_state, n in counts.trials.items():
            trials.add_metric([trial_state.value], n)
        yield trials
        per_study = GaugeMetricFamily(
            "hpo_study_trials", "Trials by study and state.", labels=["study", "state"]
        )
        for study, per_state in sorted(counts.trials_by_study.items()):
            for trial_state, n in per_state.items():
                per_study.add_metric([study, trial_state.value], n)
        yield per_study
        yield GaugeMetricFamily(
            "hpo_leases_active",
            "Running trials whose lease has not expired.",
            value=counts.leases_active,
        )
        yield GaugeMetricFamily(
            "hpo_leases_expired",
            "Running trials whose lease expired and that wait to be queued again.",
            value=counts.leases_expired,
        )
        workers = GaugeMetricFamily(
            "hpo_workers",
            "Registered workers: active, stale (no heartbeat lately) or gone (deregistered).",
            labels=["state"],
        )
        for worker_state, n in counts.workers.items():
            workers.add_metric([worker_state], n)
        yield workers


def render(counts: Counts, http: HttpMetrics) -> bytes:
    """The whole exposition: the database's gauges, then the request metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(counts))
    return generate_latest(registry) + http.exposition()


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
    stale_after = timedelta(seconds=services.settings.stale_worker_seconds)
    counts = read_counts(services.db, utcnow(), stale_after)
    return Response(render(counts, http), media_type=CONTENT_TYPE)
