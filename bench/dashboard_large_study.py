"""The web page on a large study: 10,000 trials of 20 epochs seeded straight into SQLite, then the
server time and payload of every request the study page makes on first load, and the browser's
time to its first chart in headless Chromium.

    python bench/dashboard_large_study.py [--trials 10000] [--epochs 20] [--repeat 5] [--no-browser]

The study comes from `large_study.seed` (the service creates it, bulk INSERTs fill it).

Measured:
1. In process (no HTTP): each first-load endpoint through a TestClient, one after the other,
   median of `--repeat` runs after a cold one: the `Server-Timing` header (wall time inside the
   route), the whole request, the process's CPU time during it (what other load on the machine
   cannot inflate), and the bytes of the body.
2. Browser (`--no-browser` skips it): a real `hpo server` on the seeded file and Debian's
   Chromium through Playwright; time from navigation start to the first drawn chart
   (the page's `hpo:chart:<panel>` User Timing marks, docs/web.md) and to every panel drawn.

Prints a markdown report: the figures of docs/BENCHMARKS.md's "Web page" section.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
from large_study import seed  # bench/large_study.py, beside this script
from reporting import machine

from service.settings import Settings
from tests.support.chromium import ARGS, CHROMIUM
from tests.support.processes import Processes

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
    server_ms: float  # inside the route (Server-Timing), wall clock
    total_ms: float  # the whole request through the ASGI stack, wall clock
    cpu_ms: float  # CPU time of this process during the request (immune to other load)
    bytes: int
    items: int  # curves, points, lines or rows sent


def first_load(client: Any, study_id: int) -> list[Figure]:
    """Request every first-load endpoint once, one after the other, through `client` (a
    TestClient or an httpx.Client with a base URL)."""
    figures = []
    for name, suffix in FIRST_LOAD:
        began, cpu = time.perf_counter(), time.process_time()
        reply = client.get(f"/api/v1/dashboard/studies/{study_id}{suffix}")
        total = (time.perf_counter() - began) * 1000
        cpu = (time.process_time() - cpu) * 1000
        reply.raise_for_status()
        timing = reply.headers.get("server-timing", "app;dur=nan")
        server = float(timing.rsplit("dur=", 1)[1])
        body = reply.json()
        items = len(body[ITEMS[name]]) if name in ITEMS else 0
        figures.append(Figure(name, server, total, cpu, len(reply.content), items))
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
            statistics.median(r[i].cpu_ms for r in runs),
            f.bytes,
            f.items,
        )
        for i, f in enumerate(runs[0])
    ]
    return cold, warm


def in_browser(folder: Path, database_url: str, study_id: int, repeat: int) -> list[dict[str, Any]]:
    """Open the study page `repeat` times in headless Chromium against a real `hpo server`;
    per visit: first chart, every panel and the table drawn (ms from navigation start), and
    the API requests' transfer sizes and Server-Timing."""
    from playwright.sync_api import sync_playwright

    with Processes(folder) as processes, sync_playwright() as p:
        url = processes.server(HPO_DATABASE_URL=database_url)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        visits = [_visit(browser, f"{url}/#/studies/{study_id}") for _ in range(repeat)]
        browser.close()
    return visits


def _visit(browser: Any, url: str) -> dict[str, Any]:
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.wait_for_function(
        "performance.getEntriesByType('mark').filter((m) => m.name.startsWith('hpo:chart:'))"
        ".length === 4"
        " && document.querySelectorAll('#trials tbody tr[data-number]').length > 0",
        timeout=60_000,
    )
    visit: dict[str, Any] = page.evaluate(
        """() => {
            const marks = performance.getEntriesByType('mark')
                .filter((m) => m.name.startsWith('hpo:chart:'));
            return {
            firstChart: Math.min(...marks.map((m) => m.startTime)),
            panels: Object.fromEntries(marks.map((m) => [m.name.slice(10), m.startTime])),
            table: performance.now(),
            api: performance.getEntriesByType('resource')
                .filter((e) => e.name.includes('/api/v1/dashboard/'))
                .map((e) => ({start: e.startTime, end: e.responseEnd, bytes: e.encodedBodySize,
                              server: (e.serverTiming[0] || {}).duration})),
        }}"""
    )
    page.close()
    return visit


# -- the report --------------------------------------------------------------------------------


def _table(cold: list[Figure], warm: list[Figure]) -> list[str]:
    lines = [
        "| request | sent | bytes | route ms | request ms | CPU ms | route ms, cold |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, w in zip(cold, warm, strict=True):
        lines.append(
            f"| {w.name} | {w.items or ''} | {w.bytes:,} | {w.server_ms:.0f} | "
            f"{w.total_ms:.0f} | {w.cpu_ms:.0f} | {c.server_ms:.0f} |"
        )
    total = [sum(getattr(w, k) for w in warm) for k in ("server_ms", "total_ms", "cpu_ms")]
    lines.append(
        f"| **all six** | | **{sum(w.bytes for w in warm):,}** | **{total[0]:.0f}** | "
        f"**{total[1]:.0f}** | **{total[2]:.0f}** | **{sum(c.server_ms for c in cold):.0f}** |"
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
        with contextlib.closing(sqlite3.connect(f"{tmp}/bench.db")) as db:
            (metric_rows,) = db.execute("SELECT count(*) FROM hpo_trial_metrics").fetchone()
        cold, warm = in_process(settings, study_id, args.repeat)
        visits = [] if args.no_browser else in_browser(Path(tmp), url, study_id, args.repeat)
    report = [
        f"{args.trials:,} trials of up to {args.epochs} epochs ({metric_rows:,} metric rows), "
        f"seeded in {seeded:.1f} s; {machine('fastapi', 'sqlalchemy').line()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end.",
        "",
        *_table(cold, warm),
        "",
        *(_browser_lines(visits) if visits else []),
    ]
    print("\n".join(report))


if __name__ == "__main__":
    main()
