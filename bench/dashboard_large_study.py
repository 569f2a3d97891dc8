"""The web page on a large study: 10,000 trials of 20 epochs seeded straight into SQLite, then the
server time and payload of every request the study page makes on first load, and the browser's
time to its first chart in headless Chromium.

    python bench/dashboard_large_study.py [--trials 10000] [--epochs 20] [--repeat 5] [--no-browser]

Seeding goes through the service's own code for the study (`Studies.create`, so the Optuna study
exists too) and bulk INSERTs for trials, metrics and events (the page reads the `hpo_*` tables
only). Trials: 88 % completed with every epoch, 9 % pruned after 3 to 15 epochs, 2 % failed, 1 %
running; five metrics per epoch like the trainer's; a few NaN losses.

Measured:
1. In process (no HTTP): each first-load endpoint through a TestClient, median of `--repeat`
   runs after one warm-up; the response's `Server-Timing` header (time inside the route) and the
   whole request; bytes of the body.
2. Browser (`--no-browser` skips it): a real `hpo server` on the seeded file and Debian's
   Chromium through Playwright; time from navigation start to the first drawn chart
   (`window.hpoTimings.firstChart`, set by the page) and to every panel drawn.

Prints a markdown report: the figures of docs/BENCHMARKS.md's "Web page" section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from service.app import build_services
from service.settings import Settings
from service.storage.models import EventRow, MetricRow, StudyRow, TrialRow, WorkerRow

SPEC: dict[str, Any] = {
    "name": "large-study",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "strategy": {"kind": "tpe", "seed": 0, "early_stopping": "median"},
    "budget": {"max_trials": 10_000, "parallel_trials": 8, "epochs": 20},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "norm": {"type": "categorical", "choices": ["none", "batch", "layer", "group", "instance"]},
    },
    "workload": {"model": "mlp", "dataset": "synthetic"},
}
CHUNK = 20_000


def _params(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": math.exp(rng.uniform(math.log(1e-4), math.log(0.3))),
        "batch_size": rng.choice([32, 64, 128, 256]),
        "dropout": rng.uniform(0.0, 0.5),
        "weight_decay": math.exp(rng.uniform(math.log(1e-6), math.log(1e-2))),
        "norm": rng.choice(["none", "batch", "layer", "group", "instance"]),
    }


def _quality(params: dict[str, Any]) -> float:
    """A plausible final accuracy: best near lr 0.01, some norm and dropout effect."""
    lr_term = -0.08 * (math.log10(params["lr"]) + 2.0) ** 2
    norm_term = {"none": 0.0, "batch": 0.04, "layer": 0.03, "group": 0.02, "instance": 0.01}
    return 0.9 + lr_term + norm_term[params["norm"]] - 0.1 * params["dropout"]


def _metrics(rng: random.Random, final: float, epoch: int, epochs: int) -> dict[str, float]:
    progress = 1.0 - math.exp(-4.0 * epoch / epochs)
    acc = max(0.0, min(1.0, 0.1 + (final - 0.1) * progress + rng.gauss(0, 0.01)))
    loss = (1.0 - acc) * 2.0 + rng.gauss(0, 0.02)
    return {
        "val_accuracy": acc,
        "val_loss": loss if rng.random() > 0.0005 else math.nan,
        "train_loss": loss * 0.9,
        "lr": 0.01 * (0.5 + 0.5 * math.cos(math.pi * epoch / epochs)),
        "epoch_seconds": 0.5 + rng.random() * 0.1,
    }


def _trial_plan(rng: random.Random, number: int, epochs: int) -> tuple[str, int]:
    """(state, epochs reported) of trial `number`."""
    roll = rng.random()
    if roll < 0.88:
        return "completed", epochs
    if roll < 0.97:
        return "pruned", rng.randint(3, min(15, epochs))
    if roll < 0.99:
        return "failed", rng.randint(1, epochs)
    return "running", rng.randint(1, epochs - 1)


def seed(settings: Settings, trials: int = 10_000, epochs: int = 20, events: bool = True) -> int:
    """Create the study and bulk-insert `trials` trials with their metrics (and events when
    `events`) into the database of `settings`; returns the study id."""
    services = build_services(settings)
    db = services.db
    spec = {**SPEC, "budget": {**SPEC["budget"], "max_trials": trials, "epochs": epochs}}
    study_id = services.studies.create(spec).row.id
    rng = random.Random(0)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    trial_rows, metric_rows, event_rows = [], [], []
    with db.write() as session:
        workers = [
            session.execute(
                insert(WorkerRow).values(name=f"gpu{i}", host="box", device=f"cuda:{i}")
            ).inserted_primary_key[0]
            for i in range(8)
        ]
    for number in range(trials):
        state, n_epochs = _trial_plan(rng, number, epochs)
        params = _params(rng)
        final = _quality(params)
        began = start + timedelta(seconds=number * 3)
        curve = [_metrics(rng, final, e, epochs) for e in range(1, n_epochs + 1)]
        value = None if state == "failed" else curve[-1]["val_accuracy"]
        trial_id = number + 1
        trial_rows.append(
            {
                "id": trial_id,
                "study_id": study_id,
                "number": number,
                "state": state,
                "params": params,
                "value": value,
                "epochs": n_epochs,
                "attempt": 1,
                "worker_id": workers[number % len(workers)],
                "started_at": began,
                "finished_at": None if state == "running" else began + timedelta(seconds=n_epochs),
                "reason": "loss is NaN" if state == "failed" else None,
            }
        )
        for epoch, metrics in enumerate(curve, start=1):
            at = began + timedelta(seconds=epoch)
            text = json.dumps(metrics, separators=(",", ":"))  # once for the row and the event
            metric_rows.append(
                {"trial_id": trial_id, "epoch": epoch, "metrics": text, "reported_at": at}
            )
            if events:
                payload = f'{{"number":{number},"epoch":{epoch},"metrics":{text}}}'
                event_rows.append(_event(study_id, "trial_reported", trial_id, payload, at))
        if events and state != "running":
            payload = {"number": number, "state": state, "value": value, "reason": None}
            event_rows.append(_event(study_id, "trial_finished", trial_id, payload, began))
    with db.write() as session:
        session.get(StudyRow, study_id).n_trials = trials  # type: ignore[union-attr]
        connection = session.connection()
        _bulk_insert(connection, TrialRow.__table__, trial_rows)
        _bulk_insert(connection, MetricRow.__table__, metric_rows)
        _bulk_insert(connection, EventRow.__table__, event_rows)
    db.dispose()
    return study_id


def _bulk_insert(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT through the driver's executemany, with values pre-serialized the way the models'
    column types store them (JSON text, naive UTC timestamps): ten times faster than the ORM."""
    if not rows:
        return
    names = list(rows[0])
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    for i in range(0, len(rows), CHUNK):
        chunk = [tuple(_stored(row[name]) for name in names) for row in rows[i : i + CHUNK]]
        connection.exec_driver_sql(sql, chunk)


def _stored(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _event(study_id: int, kind: str, trial_id: int, payload: Any, at: datetime) -> dict:
    return {
        "study_id": study_id,
        "kind": kind,
        "trial_id": trial_id,
        "payload": payload,
        "created_at": at,
    }


# -- measuring ---------------------------------------------------------------------------------

# What the study page requests on first load (views/study.js), in its order.
FIRST_LOAD = (
    ("overview", ""),
    ("curves", "/curves?limit=100"),
    ("history", "/history"),
    ("parallel", "/parallel"),
    ("importance", "/importance"),
    ("table", "/trials?offset=0&limit=50&sort=number&order=desc"),
)
ITEMS = {"curves": "curves", "history": "points", "parallel": "lines", "table": "items"}


@dataclass(frozen=True)
class Figure:
    name: str
    server_ms: float  # inside the route (Server-Timing)
    total_ms: float  # the whole request through the ASGI stack
    bytes: int
    items: int  # curves, points, lines or rows sent


def first_load(client: Any, study_id: int) -> list[Figure]:
    """Request every first-load endpoint once, one after the other, through `client` (a
    TestClient or an httpx.Client with a base URL)."""
    figures = []
    for name, suffix in FIRST_LOAD:
        began = time.perf_counter()
        reply = client.get(f"/api/v1/dashboard/studies/{study_id}{suffix}")
        total = (time.perf_counter() - began) * 1000
        reply.raise_for_status()
        timing = reply.headers.get("server-timing", "app;dur=nan")
        server = float(timing.rsplit("dur=", 1)[1])
        body = reply.json()
        items = len(body[ITEMS[name]]) if name in ITEMS else 0
        figures.append(Figure(name, server, total, len(reply.content), items))
    return figures


def in_process(settings: Settings, study_id: int, repeat: int) -> tuple[list[Figure], list[Figure]]:
    """(cold, median of warm) figures of the first load through a TestClient."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(settings, reaper=False)) as client:
        cold = first_load(client, study_id)
        runs = [first_load(client, study_id) for _ in range(repeat)]
    warm = [
        Figure(
            f.name,
            statistics.median(r[i].server_ms for r in runs),
            statistics.median(r[i].total_ms for r in runs),
            f.bytes,
            f.items,
        )
        for i, f in enumerate(runs[0])
    ]
    return cold, warm


def in_browser(database_url: str, study_id: int, repeat: int) -> list[dict[str, Any]]:
    """Open the study page `repeat` times in headless Chromium against a real `hpo server`;
    per visit: first chart, every panel and the table drawn (ms from navigation start), and
    the API requests' transfer sizes and Server-Timing."""
    from playwright.sync_api import sync_playwright

    with _server(database_url) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        visits = [_visit(browser, f"{url}/#/studies/{study_id}") for _ in range(repeat)]
        browser.close()
    return visits


@contextlib.contextmanager
def _server(database_url: str) -> Iterator[str]:
    """A real `hpo server` on `database_url` and a free port; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HPO_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "service.cli", "server", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("hpo server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _visit(browser: Any, url: str) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.wait_for_function(
        "Object.keys(window.hpoTimings.panels).length === 4"
        " && document.querySelectorAll('#trials tbody tr[data-number]').length > 0",
        timeout=60_000,
    )
    visit: dict[str, Any] = page.evaluate(
        """() => ({
            firstChart: window.hpoTimings.firstChart,
            panels: window.hpoTimings.panels,
            table: performance.now(),
            api: performance.getEntriesByType('resource')
                .filter((e) => e.name.includes('/api/v1/dashboard/'))
                .map((e) => ({start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize,
                              server: (e.serverTiming[0] || {}).duration})),
        })"""
    )
    page.close()
    return visit


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# -- the report --------------------------------------------------------------------------------


def _table(cold: list[Figure], warm: list[Figure]) -> list[str]:
    lines = [
        "| request | sent | bytes | server ms (warm) | request ms (warm) | server ms (cold) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, w in zip(cold, warm, strict=True):
        lines.append(
            f"| {w.name} | {w.items or ''} | {w.bytes:,} | {w.server_ms:.0f} | "
            f"{w.total_ms:.0f} | {c.server_ms:.0f} |"
        )
    lines.append(
        f"| **all six** | | **{sum(w.bytes for w in warm):,}** | "
        f"**{sum(w.server_ms for w in warm):.0f}** | **{sum(w.total_ms for w in warm):.0f}** | "
        f"**{sum(c.server_ms for c in cold):.0f}** |"
    )
    return lines


def _browser_lines(visits: list[dict[str, Any]]) -> list[str]:
    def median(key: Any) -> float:
        return statistics.median(key(v) for v in visits)

    def api_window(v: dict[str, Any]) -> float:
        return max(e["end"] for e in v["api"]) - min(e["start"] for e in v["api"])

    return [
        f"Browser, median of {len(visits)} visits (first: {visits[0]['firstChart']:.0f} ms to "
        "the first chart, cold server):",
        "",
        f"- first chart drawn: **{median(lambda v: v['firstChart']):.0f} ms** after navigation",
        f"- all four charts drawn: {median(lambda v: max(v['panels'].values())):.0f} ms; "
        f"table filled: {median(lambda v: v['table']):.0f} ms",
        f"- the six API requests (in parallel): {median(api_window):.0f} ms from the first "
        f"sent to the last answered, {median(lambda v: sum(e['bytes'] for e in v['api'])):,.0f}"
        " bytes",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, artifacts_dir=Path(tmp))
        began = time.perf_counter()
        study_id = seed(settings, args.trials, args.epochs)
        seeded = time.perf_counter() - began
        cold, warm = in_process(settings, study_id, args.repeat)
        visits = [] if args.no_browser else in_browser(url, study_id, args.repeat)
    rows = args.trials * args.epochs
    report = [
        f"{args.trials:,} trials, up to {args.epochs} epochs (at most {rows:,} metric rows), "
        f"seeded in {seeded:.1f} s; {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, {os.cpu_count()} CPUs.",
        "",
        *_table(cold, warm),
        "",
        *(_browser_lines(visits) if visits else []),
    ]
    print("\n".join(report))


if __name__ == "__main__":
    main()
