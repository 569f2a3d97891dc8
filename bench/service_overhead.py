"""Service overhead: the whole life of N trials through the hpo server's HTTP API with a no-op
trainer, against Optuna's own ask / report / tell on an RDBStorage of the same SQLite kind.

    python bench/service_overhead.py --trials 1000 [--workers 4]

Each part runs on a fresh SQLite file in one temporary folder:

1. Optuna, before the service and again at the end: `study.ask()`, two `suggest_float`,
   10x (`report` + `should_prune`), `study.tell`, on `open_optuna_storage` (the service's WAL,
   busy timeout, synchronous=NORMAL, BEGIN IMMEDIATE). The pruner is `NopPruner`: the service
   study (`early_stopping: none`) consults none either.
2. Service over HTTP: a real `hpo server` subprocess; one registered worker leases a trial,
   reports 10 epochs and completes it, N times, through `trainer.client.Client`. Baselines:
   `GET /healthz` (HTTP, no database) and a report with epoch 0 (refused 422 by request
   validation: HTTP plus body parsing, no database).
3. With `--workers K`: K threads, each its own client and worker, on a study with
   `parallel_trials: K`.
4. Service in process: the same loop calling the server's `Protocol` directly (no HTTP) on the
   first `--in-process-trials`, counting SQL statements and commits per call; then cProfile over
   the next `--profile-trials` trials of the same study.

Prints a markdown report (the figures of docs/BENCHMARKS.md), then the functions with the most
self time in the profile.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import optuna
from sqlalchemy import Engine, event

from service.app import build_services
from service.settings import Settings
from service.storage.db import open_optuna_storage
from trainer.client import ApiError, Client

EPOCHS = 10
METRIC = "val_accuracy"
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


class BenchError(Exception):
    """The benchmark did not do what it measures (a refused call, a missing trial)."""


def study_spec(name: str, trials: int, parallel: int) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": METRIC, "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": trials, "parallel_trials": parallel, "epochs": EPOCHS},
        "space": SPACE,
        "workload": {"model": "mlp", "dataset": "synthetic"},
    }


def fake_metrics(rng: random.Random, epoch: int) -> dict[str, float]:
    """What the trainer reports after an epoch, made up: the trainer here is a no-op."""
    accuracy = min(0.99, 0.5 + 0.04 * epoch + 0.05 * rng.random())
    return {
        "val_accuracy": accuracy,
        "val_loss": 1.0 - accuracy,
        "train_loss": 1.0 - accuracy + 0.01,
        "lr": 0.01,
        "epoch_seconds": 0.0,
    }


# -- measuring ------------------------------------------------------------------------------


class SqlCounter:
    """Counts the SQL statements and the commits sent through some engines."""

    def __init__(self, *engines: Engine) -> None:
        self.statements = 0
        self.commits = 0
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._on_statement)
            event.listen(engine, "commit", self._on_commit)

    def _on_statement(self, *_args: Any) -> None:
        self.statements += 1

    def _on_commit(self, *_args: Any) -> None:
        self.commits += 1


@dataclass
class Run:
    """One timed loop: latencies by call kind (in call order), trial end times, SQL work."""

    start: float = field(default_factory=time.perf_counter)
    ends: list[float] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sql: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    counter: SqlCounter | None = None

    def timed(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        counter = self.counter
        before = (counter.statements, counter.commits) if counter else (0, 0)
        t0 = time.perf_counter()
        result = fn(*args)
        self.latency[kind].append(time.perf_counter() - t0)
        if counter:
            self.sql[kind].append((counter.statements - before[0], counter.commits - before[1]))
        return result

    @property
    def seconds(self) -> float:
        return self.ends[-1] - self.start

    def rate(self) -> float:
        return len(self.ends) / self.seconds

    def tenth_rates(self) -> tuple[float, float]:
        """Trials per second over the first and over the last tenth of the trials."""
        k = max(1, len(self.ends) // 10)
        first = k / (self.ends[k - 1] - self.start)
        last = k / (self.ends[-1] - self.ends[-k - 1]) if len(self.ends) > k else first
        return first, last


def median(values: list[float]) -> float:
    return quantile(values, 0.5)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# -- Optuna on its own ----------------------------------------------------------------------


def run_optuna(url: str, trials: int) -> tuple[Run, SqlCounter]:
    storage = open_optuna_storage(url)
    counter = SqlCounter(storage.engine)
    study = optuna.create_study(
        storage=storage,
        study_name="bench",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    rng = random.Random(0)
    run = Run()
    for _ in range(trials):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 0.1, log=True)
        trial.suggest_float("dropout", 0.0, 0.5)
        value = 0.0
        for epoch in range(1, EPOCHS + 1):
            value = fake_metrics(rng, epoch)[METRIC]
            trial.report(value, epoch)
            if trial.should_prune():
                raise BenchError("NopPruner pruned a trial")
        study.tell(trial, value)
        run.ends.append(time.perf_counter())
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(done) != trials:
        raise BenchError(f"Optuna completed {len(done)} of {trials} trials")
    storage.engine.dispose()
    return run, counter


# -- the service ----------------------------------------------------------------------------


class HttpWorker:
    """One registered worker talking to the server through the project's client."""

    def __init__(self, server: str, name: str) -> None:
        self.client = Client(server, retry_seconds=5.0)
        registered = self.client.register(name, socket.gethostname(), os.getpid(), "cpu", {})
        self.worker_id = registered["worker_id"]

    def lease(self) -> list[tuple[int, str]]:
        return [(a["trial_id"], a["token"]) for a in self.client.lease(self.worker_id)]

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> str:
        return self.client.report(self.worker_id, trial_id, token, epoch, metrics)

    def complete(self, trial_id: int, token: str) -> None:
        self.client.complete(self.worker_id, trial_id, token)


class DomainWorker:
    """The same worker calling the server's `Protocol` in this process (no HTTP)."""

    def __init__(self, protocol: Any, name: str) -> None:
        self.protocol = protocol
        self.worker_id = protocol.register(name, socket.gethostname(), os.getpid(), "cpu", {}).id

    def lease(self) -> list[tuple[int, str]]:
        return [(a.trial.id, a.trial.lease_token) for a in self.protocol.lease(self.worker_id)]

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> str:
        return str(self.protocol.report(self.worker_id, trial_id, token, epoch, metrics).value)

    def complete(self, trial_id: int, token: str) -> None:
        self.protocol.complete(self.worker_id, trial_id, token)


def drive(
    worker: HttpWorker | DomainWorker, run: Run, seed: int, trials: int | None = None
) -> None:
    """The no-op trainer: lease a trial, report every epoch, complete; until no work is left
    (or `trials` are done)."""
    rng = random.Random(seed)
    while trials is None or len(run.ends) < trials:
        leased = run.timed("lease", worker.lease)
        if not leased:
            return
        trial_id, token = leased[0]
        for epoch in range(1, EPOCHS + 1):
            metrics = fake_metrics(rng, epoch)
            decision = run.timed("report", worker.report, trial_id, token, epoch, metrics)
            if decision != "continue":
                raise BenchError(f"trial {trial_id} epoch {epoch}: the server said {decision}")
        run.timed("complete", worker.complete, trial_id, token)
        run.ends.append(time.perf_counter())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def hpo_server(folder: Path) -> Iterator[str]:
    """A real `hpo server` on a fresh SQLite file; yields its URL once /healthz answers."""
    port = free_port()
    env = {**os.environ, "HPO_DATABASE_URL": f"sqlite:///{folder}/svc.db"}
    env["HPO_ARTIFACTS_DIR"] = str(folder / "artifacts")
    command = [sys.executable, "-m", "service.cli", "server", "--port", str(port)]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                log_text = (folder / "server.log").read_text(errors="replace")
                raise BenchError(f"hpo server exited with {process.returncode}:\n{log_text}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError("hpo server did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_study(client: Client, study_id: int, trials: int) -> None:
    study = client.study(study_id)
    if study["state"] != "completed" or study["counts"]["completed"] != trials:
        raise BenchError(f"study ended {study['state']} with counts {study['counts']}")


def run_service(url: str, trials: int) -> Run:
    client = Client(url)
    study = client.create_study(study_spec("bench", trials, parallel=1))
    run = Run()
    drive(HttpWorker(url, "bench-worker"), run, seed=0)
    check_study(client, study["id"], trials)
    return run


def refused_report(worker: HttpWorker) -> None:
    """A report that request validation refuses (epoch 0): no route code, no database."""
    try:
        worker.report(1, "token", 0, {METRIC: 0.5})
    except ApiError as exc:
        if exc.status == 422:
            return
        raise
    raise BenchError("a report of epoch 0 was accepted")


def baselines(url: str, calls: int) -> Run:
    """Requests that do no database work: `GET /healthz` and a report refused with 422."""
    worker = HttpWorker(url, "bench-baseline")
    run = Run()
    for _ in range(calls):
        run.timed("GET /healthz", worker.client.health)
        run.timed("report refused by validation (422)", refused_report, worker)
    return run


def run_service_threads(url: str, trials: int, workers: int) -> Run:
    """`workers` threads, each its own client and worker, sharing one study."""
    client = Client(url)
    study = client.create_study(study_spec(f"bench-{workers}-workers", trials, workers))
    runs = [Run() for _ in range(workers)]
    threads = [
        threading.Thread(target=drive, args=(HttpWorker(url, f"bench-{i}"), runs[i], i))
        for i in range(workers)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check_study(client, study["id"], trials)
    merged = Run(start=start, ends=sorted(t for r in runs for t in r.ends))
    for r in runs:
        for kind, values in r.latency.items():
            merged.latency[kind].extend(values)
    return merged


def run_in_process(folder: Path, trials: int, profiled: int) -> tuple[Run, pstats.Stats]:
    """The loop against `Protocol` directly: `trials` timed and SQL-counted, then `profiled`
    more of the same study under cProfile."""
    url = f"sqlite:///{folder}/in_process.db"
    services = build_services(Settings(database_url=url, artifacts_dir=folder / "artifacts"))
    protocol = services.protocol
    counter = SqlCounter(services.db.engine, protocol.storage.engine)
    services.studies.create(study_spec("bench", trials + profiled, parallel=1))
    worker = DomainWorker(protocol, "in-process")
    run = Run(counter=counter)
    drive(worker, run, seed=0, trials=trials)
    profiler = cProfile.Profile()
    profiler.runcall(drive, worker, Run(), 1)
    services.db.dispose()
    return run, pstats.Stats(profiler)


# -- the profile ----------------------------------------------------------------------------

# Where the profiled loop spends its time (cumulative): (file suffix, function, label).
HOTSPOTS = [
    ("service/domain/leasing.py", "lease", "`Protocol.lease`"),
    ("service/domain/search.py", "ask", "of which `search.ask` (Optuna, after the commit)"),
    ("optuna/study/study.py", "_pop_waiting_trial_id", "of which `Study._pop_waiting_trial_id`"),
    ("service/domain/protocol.py", "report", "`Protocol.report`"),
    ("service/domain/search.py", "report", "of which `search.report` (Optuna)"),
    ("service/domain/protocol.py", "complete", "`Protocol.complete`"),
    ("service/domain/search.py", "tell", "of which `search.tell` (Optuna)"),
]


def package_of(filename: str, function: str) -> str:
    if filename == "~":
        if "sqlite3." in function:
            return "SQLite (sqlite3 C calls)"
        return "pydantic" if "pydantic_core" in function else "other C built-ins"
    for marker, name in (
        ("/sqlalchemy/", "SQLAlchemy (Python)"),
        ("/optuna/", "Optuna (Python)"),
        ("/pydantic", "pydantic"),
        ("/service/", "service code"),
    ):
        if marker in filename:
            return name
    return "other Python (stdlib)"


def profile_tables(stats: pstats.Stats) -> list[str]:
    """Cumulative time of the hotspots, and self time by package, as markdown."""
    rows = stats.stats.items()  # type: ignore[attr-defined]
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, function), row in rows:
        by_package[package_of(filename, function)] += row[2]
    total = sum(by_package.values())
    lines = ["| profiled call | calls | cumulative | share |", "| --- | ---: | ---: | ---: |"]
    for suffix, name, label in HOTSPOTS:
        found = [
            r for (f, _l, fn), r in rows if fn == name and f.endswith(suffix.replace("/", os.sep))
        ]
        calls, seconds = sum(r[1] for r in found), sum(r[3] for r in found)
        lines.append(f"| {label} | {calls} | {seconds:.2f} s | {100 * seconds / total:.0f}% |")
    lines += ["", "| package (self time) | seconds | share |", "| --- | ---: | ---: |"]
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} s | {100 * seconds / total:.0f}% |")
    return lines


def top_functions(stats: pstats.Stats, count: int) -> str:
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    lines = [f"Top {count} functions by self time (cProfile, in-process loop):"]
    for (filename, line, function), (_cc, calls, self_s, cum_s, _callers) in rows[:count]:
        where = f"{Path(filename).name}:{line}" if filename != "~" else "built-in"
        lines.append(
            f"  {self_s:7.3f} s self {cum_s:7.3f} s cum {calls:8d} x  {function} ({where})"
        )
    return "\n".join(lines)


# -- the report -----------------------------------------------------------------------------


@dataclass
class Results:
    trials: int
    optuna: list[Run]  # before and after the service runs: the machine's load may change
    optuna_sql: SqlCounter
    service: Run
    baseline: Run
    threads: dict[int, Run]
    domain: Run
    profile: pstats.Stats
    profiled: int
    load: list[tuple[float, float, float]]

    @property
    def fastest_optuna(self) -> Run:
        return max(self.optuna, key=Run.rate)

    @property
    def slowest_optuna(self) -> Run:
        return min(self.optuna, key=Run.rate)


def machine(load: list[tuple[float, float, float]]) -> str:
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("optuna", "sqlalchemy", "fastapi", "uvicorn")
    )
    loads = " / ".join(f"{avg[0]:.1f}" for avg in load)
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), no GPU used, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, {versions}; 1-minute load average at start / end: {loads}"
    )


def code_version() -> str:
    """The commit measured, and whether service/ or trainer/ differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "trainer"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return "unknown (no git)"
    if not changed:
        return f"commit {commit}"
    return f"commit {commit} with {len(changed)} uncommitted files in service/ and trainer/"


def rates_table(r: Results) -> list[str]:
    base = r.fastest_optuna.rate()
    rows = [
        (f"Optuna ask / report / tell, RDBStorage, {when} the service", run)
        for when, run in zip(("before", "after"), r.optuna, strict=True)
    ]
    rows.append(("service over HTTP, 1 worker", r.service))
    rows += [(f"service over HTTP, {k} worker threads", run) for k, run in r.threads.items()]
    rows.append(("service in process (`Protocol`, no HTTP)", r.domain))
    lines = [
        "| run | trials | seconds | trials/s | first 10%: trials/s | last 10%: trials/s | "
        "/ Optuna |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, run in rows:
        first, last = run.tenth_rates()
        lines.append(
            f"| {name} | {len(run.ends)} | {run.seconds:.1f} | {run.rate():.1f} | {first:.1f} | "
            f"{last:.1f} | {run.rate() / base:.2f} |"
        )
    return lines


def latency_table(title: str, run: Run, shares: bool = True) -> list[str]:
    """Median and p95 per call kind, the median over the first and last tenth of the calls,
    and (when counted) SQL statements and commits per call."""
    total = sum(sum(v) for v in run.latency.values())
    lines = [
        f"| {title} | calls | median ms | p95 ms | first 10%: median | last 10%: median | "
        "share of time | SQL statements / commits |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, values in run.latency.items():
        tenth = max(1, len(values) // 10)
        work = run.sql.get(kind)
        sql = "-"
        if work:
            sql = f"{sum(w[0] for w in work) / len(work):.1f} / "
            sql += f"{sum(w[1] for w in work) / len(work):.1f}"
        lines.append(
            f"| {kind} | {len(values)} | {ms(median(values))} | {ms(quantile(values, 0.95))} | "
            f"{ms(median(values[:tenth]))} | {ms(median(values[-tenth:]))} | "
            f"{f'{100 * sum(values) / total:.0f}%' if shares else '-'} | {sql} |"
        )
    return lines


def per_trial_lines(r: Results) -> list[str]:
    """One trial's cost on each side, and how much of the service's is transport."""
    optuna_ms = 1000 * r.fastest_optuna.seconds / r.trials
    service_ms = 1000 * r.service.seconds / r.trials
    domain_ms = 1000 * r.domain.seconds / len(r.domain.ends)
    domain_sql = [w for works in r.domain.sql.values() for w in works]
    statements = sum(w[0] for w in domain_sql) / len(r.domain.ends)
    commits = sum(w[1] for w in domain_sql) / len(r.domain.ends)
    healthz = median(r.baseline.latency["GET /healthz"])
    return [
        f"- One trial: Optuna {optuna_ms:.1f} ms ({r.optuna_sql.statements / r.trials:.0f} SQL "
        f"statements, {r.optuna_sql.commits / r.trials:.0f} commits); the service "
        f"{service_ms:.1f} ms over HTTP (average over {r.trials} trials), "
        f"{domain_ms:.1f} ms in process over its first {len(r.domain.ends)} trials "
        f"({statements:.0f} statements, {commits:.0f} commits).",
        f"- Transport: {EPOCHS + 2} requests per trial at the `GET /healthz` median of "
        f"{ms(healthz)} ms is {(EPOCHS + 2) * healthz * 1000:.1f} ms per trial.",
    ]


def report(r: Results) -> str:
    lines = [
        f"N = {r.trials} trials of {EPOCHS} epochs each (no-op trainer), random sampler, two float "
        "params, one SQLite file per run.",
        "",
        f"Machine: {machine(r.load)}.",
        "",
        f"Code: {code_version()}.",
        "",
        *rates_table(r),
        "",
        f"**service / Optuna = {r.service.rate() / r.fastest_optuna.rate():.2f}** (1 worker over "
        f"HTTP, against the faster Optuna run; {r.service.rate() / r.slowest_optuna.rate():.2f} "
        "against the slower).",
        "",
        *latency_table("request (HTTP, 1 worker)", r.service),
        *latency_table("baseline", r.baseline, shares=False)[2:],
        "",
        *latency_table("call (in process, no HTTP)", r.domain),
        "",
        *per_trial_lines(r),
        "",
        f"Profile of trials {len(r.domain.ends) + 1} to {len(r.domain.ends) + r.profiled} in "
        "process (cProfile inflates Python against C; shares, not absolute times):",
        "",
        *profile_tables(r.profile),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="N, trials per run")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also K threads")
    parser.add_argument("--baseline-calls", type=int, default=500, help="of each baseline")
    parser.add_argument("--in-process-trials", type=int, default=200)
    parser.add_argument("--profile-trials", type=int, default=50)
    parser.add_argument("--top", type=int, default=25, help="functions to list from the profile")
    args = parser.parse_args(argv)

    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        folder = Path(tmp)
        before, optuna_sql = run_optuna(f"sqlite:///{folder}/optuna.db", args.trials)
        with hpo_server(folder) as url:
            baseline = baselines(url, args.baseline_calls)
            service = run_service(url, args.trials)
            threads = {k: run_service_threads(url, args.trials, k) for k in args.workers}
        in_process = min(args.trials, args.in_process_trials)
        domain, profile = run_in_process(folder, in_process, args.profile_trials)
        after, _ = run_optuna(f"sqlite:///{folder}/optuna_after.db", args.trials)
    load.append(os.getloadavg())
    results = Results(
        args.trials, [before, after], optuna_sql, service, baseline, threads, domain, profile,
        args.profile_trials, load,
    )  # fmt: skip
    print(report(results))
    print()
    print(top_functions(profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
