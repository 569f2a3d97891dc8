"""What a lease and a batched report cost the server, in process (no HTTP): the `Protocol`'s
own calls on a fresh SQLite file or PostgreSQL database, with the SQL statements they send.

    python bench/server_costs.py [--databases sqlite postgres] [--trials 256] [--lease 32]
        [--batch 128] [--reports 10] [--postgres-url URL]

A random-search study of 3 params (lr, dropout, weight decay) with `parallel_trials` =
`--trials`; one worker leases them `--lease` at a time (each lease finds the trials leased
before it still running, as a worker fleet keeps them), then sends `--reports` batched reports
of the first `--batch` trials' next epoch (after WARM_UP unmeasured ones). Reported: per leased
trial, the median ms and the statements (the service's and Optuna's engines) of the first and
of the last lease; per batch, the median ms and statements, and ms an item. Every answer must
be `continue`. The commits column counts the transactions committed (each of Optuna's own is
one).

Then the same batches (`--reports` more epochs) through the app: `POST
/api/v1/workers/{id}/reports` called as uvicorn calls it (an ASGI call with the JSON body, no
socket), so the difference to the domain call alone is what the server spends around it
(middleware, routing or its short way, the body's check, the thread-pool hop, the answer).
Both rows also give this process's CPU ms a batch (time.process_time over the calls, every
thread's), which the load of a shared machine moves less than wall time.

    python bench/server_costs.py --completions [--databases ...] [--trials 64] [--epochs 10]

measures a trial's completion instead: a random-search study of `--trials` trials (all in
parallel, `--epochs` epochs, the study's budget, so the last completion settles it), leased 8
at a time, every epoch but the last reported in batches; then each trial is completed as a
worker completes it (its last epoch's report and its test metrics with it, no lease), half
through `Protocol.reporting.complete` (the domain: the service's transaction and Optuna's after
it) and half through the app (`POST /api/v1/workers/{id}/trials/{trial}/complete` as one ASGI
call). Reported per completion: median ms, statements, commits and CPU ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
from overhead_loops import SqlCounter
from reporting import code_version, machine, markdown_table, median

from hpo.protocol import Decision, TrialReport, TrialState
from service.app import create_app
from service.settings import Settings
from tests.support.databases import scratch_postgres


def spec(trials: int) -> dict[str, object]:
    return {
        "name": "costs",
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": trials, "parallel_trials": trials, "epochs": 100_000},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        },
        "workload": {"model": "mlp", "dataset": "synthetic"},
    }


@contextmanager
def database(kind: str, folder: Path, admin_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'costs.db'}"
        return
    if not admin_url:
        raise SystemExit("postgres needs --postgres-url or HPO_TEST_POSTGRES_URL")
    with scratch_postgres(admin_url, "hpo_bench_costs") as url:
        yield url


Measure = Callable[[str, str, Path, argparse.Namespace], list[list[object]]]


def on_each_database(measure: Measure, args: argparse.Namespace) -> list[list[object]]:
    """`measure(kind, url, folder, args)` on a fresh database of each of `args.databases`
    (a PostgreSQL one through `args.postgres_url`), its rows together; prints the machine, the
    1-minute load average before and after, and the code measured."""
    load = [os.getloadavg()[0]]
    rows: list[list[object]] = []
    for kind in args.databases:
        with (
            tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp,
            database(kind, Path(tmp), args.postgres_url) as url,
        ):
            rows.extend(measure(kind, url, Path(tmp), args))
    load.append(os.getloadavg()[0])
    print(f"Machine: {machine('optuna', 'sqlalchemy').line()}; 1-minute load average at "
          f"start / end: {load[0]:.1f} / {load[1]:.1f}.\n")  # fmt: skip
    print(f"Code: {code_version('service', 'hpo')}.\n")
    return rows


def measure(kind: str, url: str, folder: Path, args: argparse.Namespace) -> list[list[object]]:
    # Leases of an hour: a slow lease must not let the earlier ones expire and be reaped.
    settings = Settings(database_url=url, artifacts_dir=folder / "artifacts", lease_seconds=3600)
    app = create_app(settings, reaper=False)
    services = app.state.services
    services.studies.create(spec(args.trials))
    protocol = services.protocol
    counter = SqlCounter(services.db.engine, protocol.context.storage.engine)
    worker = protocol.leasing.register("bench", "host", os.getpid(), "cpu", {}).id
    leases: list[tuple[float, int, int, int]] = []  # (seconds, statements, commits, trials)
    held = []
    while len(held) < args.trials:
        before, commits, started = counter.statements, counter.commits, time.perf_counter()
        got = protocol.leasing.lease(worker, min(args.lease, args.trials - len(held)))
        took = time.perf_counter() - started
        leases.append((took, counter.statements - before, counter.commits - commits, len(got)))
        held.extend(got)
    rows: list[list[object]] = []
    for label, (seconds, statements, commits, n), running in (
        ("first", leases[0], 0),
        ("last", leases[-1], len(held) - leases[-1][3]),
    ):
        rows.append([kind, f"lease of {n} ({label}: {running} trials running)",
                     f"{1000 * seconds / n:.2f}", f"{statements / n:.1f}",
                     f"{commits / n:.2f}", "-"])  # fmt: skip
    batch = held[: args.batch]
    for epoch in range(1, WARM_UP + 1):  # the first calls build and cache the statements
        protocol.reporting.report_many(_items(batch, epoch))
    took, statements = [], 0
    cpu = time.process_time()
    for epoch in range(WARM_UP + 1, WARM_UP + args.reports + 1):
        items = _items(batch, epoch)
        before, commits, started = counter.statements, counter.commits, time.perf_counter()
        outcomes = protocol.reporting.report_many(items)
        took.append(time.perf_counter() - started)
        statements, commits = counter.statements - before, counter.commits - commits
        if any(o is not Decision.CONTINUE for o in outcomes):
            raise SystemExit(f"a report was answered {set(map(str, outcomes))}")
    cpu = time.process_time() - cpu
    rows.append([kind, f"batched report of {len(batch)} (median of {args.reports})",
                 f"{1000 * median(took):.2f} ({1000 * median(took) / len(batch):.3f} an item)",
                 str(statements), str(commits),
                 f"{1000 * cpu / args.reports:.2f}"])  # fmt: skip
    first = WARM_UP + args.reports + 1
    bodies = [_body(batch, epoch) for epoch in range(first, first + WARM_UP + args.reports)]
    took, cpu = asyncio.run(_through_app(app, worker, bodies))
    rows.append([kind, f"the same through the app (median of {args.reports})",
                 f"{1000 * median(took):.2f} ({1000 * median(took) / len(batch):.3f} an item)",
                 "-", "-", f"{1000 * cpu / args.reports:.2f}"])  # fmt: skip
    services.db.dispose()
    return rows


def completion_spec(trials: int, epochs: int) -> dict[str, object]:
    document = spec(trials)
    document["budget"] = {"max_trials": trials, "parallel_trials": trials, "epochs": epochs}
    return document


def measure_completions(
    kind: str, url: str, folder: Path, args: argparse.Namespace
) -> list[list[object]]:
    settings = Settings(database_url=url, artifacts_dir=folder / "artifacts", lease_seconds=3600)
    app = create_app(settings, reaper=False)
    services = app.state.services
    study = services.studies.create(completion_spec(args.trials, args.epochs))
    protocol = services.protocol
    counter = SqlCounter(services.db.engine, protocol.context.storage.engine)
    worker = protocol.leasing.register("bench", "host", os.getpid(), "cpu", {}).id
    held: list[Any] = []
    while len(held) < args.trials:
        held.extend(protocol.leasing.lease(worker, min(8, args.trials - len(held))))
    for epoch in range(1, args.epochs):
        protocol.reporting.report_many(_items(held, epoch))
    last = args.epochs
    metrics = _items(held[:1], last)[0].metrics
    test = {"test_accuracy": 0.9, "test_loss": 0.3}
    half = len(held) // 2
    took: list[float] = []
    statements = commits = 0
    cpu = time.process_time()
    for a in held[:half]:
        before, committed, started = counter.statements, counter.commits, time.perf_counter()
        trial = protocol.reporting.complete(
            a.trial.id, a.trial.lease_token or "", test, [(last, metrics)]
        )
        took.append(time.perf_counter() - started)
        statements += counter.statements - before
        commits += counter.commits - committed
        if trial.state.value != "completed":
            raise SystemExit(f"trial {trial.id} ended {trial.state.value}")
    cpu = time.process_time() - cpu
    rows: list[list[object]] = [
        [kind, f"completion, the domain (median of {half})", f"{1000 * median(took):.2f}",
         f"{statements / half:.1f}", f"{commits / half:.2f}", f"{1000 * cpu / half:.2f}"]
    ]  # fmt: skip
    calls = []
    for a in held[half:]:
        body = {"token": a.trial.lease_token, "lease": 0, "test_metrics": test,
                "reports": [{"epoch": last, "metrics": metrics}]}  # fmt: skip
        path = f"/api/v1/workers/{worker}/trials/{a.trial.id}/complete"
        calls.append((path, json.dumps(body).encode()))
    before, committed = counter.statements, counter.commits
    took, cpu, answers = asyncio.run(_post_each(app, calls))
    n = len(calls)
    for status, answer in answers:
        if status != 200 or answer["state"] != "completed":
            raise SystemExit(f"a completion through the app was answered {status}: {answer}")
    rows.append([kind, f"the same through the app (median of {n})", f"{1000 * median(took):.2f}",
                 f"{(counter.statements - before) / n:.1f}",
                 f"{(counter.commits - committed) / n:.2f}", f"{1000 * cpu / n:.2f}"])  # fmt: skip
    view = services.studies.get(study.row.id)
    if view.row.state.value != "completed" or view.counts[TrialState.COMPLETED] != args.trials:
        raise SystemExit(f"the study ended {view.row.state.value}, counts {view.counts}")
    services.db.dispose()
    return rows


async def _post_each(
    app: Any, calls: list[tuple[str, bytes]]
) -> tuple[list[float], float, list[tuple[int, Any]]]:
    """Each (path, JSON body) POSTed to the app as one ASGI call, in order: the wall seconds of
    each, the process's CPU seconds of them all, and each (status, answer), the answers
    decoded after the CPU time is taken."""
    took: list[float] = []
    replies: list[list[dict[str, Any]]] = []
    cpu = time.process_time()
    for path, body in calls:
        sent: list[dict[str, Any]] = []
        replies.append(sent)

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "root_path": "", "query_string": b"",
                 "path": path, "raw_path": b"", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                 "state": {}}  # fmt: skip
        started = time.perf_counter()
        await app(scope, receive, send)
        took.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    answers = [
        (sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:])))
        for sent in replies
    ]
    return took, cpu, answers


# Batches sent before each measured series, unmeasured.
WARM_UP = 5


def _items(batch: list[Any], epoch: int) -> list[TrialReport]:
    metrics = {"val_accuracy": 1 - 1 / (epoch + 1), "val_loss": 1 / (epoch + 1)}
    return [
        TrialReport(trial_id=a.trial.id, token=a.trial.lease_token or "", epoch=epoch,
                    metrics=metrics)
        for a in batch
    ]  # fmt: skip


def _body(batch: list[Any], epoch: int) -> bytes:
    return json.dumps({"reports": [i.model_dump() for i in _items(batch, epoch)]}).encode()


async def _through_app(app: Any, worker: int, bodies: list[bytes]) -> tuple[list[float], float]:
    """Each body POSTed to the app's batched report route as one ASGI call: the wall seconds
    of each, and the process's CPU seconds of them all, but the first WARM_UP's (they build
    the app's middleware stack and caches)."""
    calls = [(f"/api/v1/workers/{worker}/reports", body) for body in bodies]
    _, _, warm = await _post_each(app, calls[:WARM_UP])
    took, cpu, measured = await _post_each(app, calls[WARM_UP:])
    for status, answer in warm + measured:
        if status != 200 or any(r["decision"] != "continue" for r in answer["results"]):
            raise SystemExit(f"a batch through the app was answered {status}: {answer}")
    return took, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--lease", type=int, default=32, help="trials per lease")
    parser.add_argument("--batch", type=int, default=128, help="reports per batch")
    parser.add_argument("--reports", type=int, default=10, help="batches measured")
    parser.add_argument("--postgres-url", default=os.environ.get("HPO_TEST_POSTGRES_URL"))
    parser.add_argument(
        "--completions", action="store_true", help="measure a trial's completion instead"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs a trial (--completions)")
    args = parser.parse_args(argv)
    if args.completions:
        args.trials = args.trials if "--trials" in (argv or sys.argv) else 64
        rows = on_each_database(measure_completions, args)
        header = ["database", "call", "ms a completion", "statements", "commits", "CPU ms"]
        print(markdown_table(header, rows, text=2))
        return 0
    rows = on_each_database(measure, args)
    header = [
        "database",
        "call",
        "ms (a leased trial / a batch)",
        "statements (a trial / a batch)",
        "commits (a trial / a batch)",
        "CPU ms a batch",
    ]
    print(markdown_table(header, rows, text=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
