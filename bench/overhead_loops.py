"""What bench/service_overhead.py measures: the no-op trainer's loop of lease, 10 reports and
complete, driven over HTTP against a real `hpo server` or in process against `Protocol`, and
Optuna's own ask / report / tell for comparison; each timed call by kind, with SQL counted."""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import Engine, event

from hpo.client import ApiError, Client
from service.app import build_services
from service.settings import Settings
from service.storage.db import open_optuna_storage
from trainer.client import WorkerClient

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


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (None: this one, all threads):
    what a loop costs whatever else the shared machine runs meanwhile."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One timed loop: latencies by call kind (in call order), trial end times, SQL work, and
    the CPU seconds it took in this process (`cpu`) and in the server's (`server_cpu`)."""

    start: float = field(default_factory=time.perf_counter)
    ends: list[float] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sql: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    counter: SqlCounter | None = None
    cpu: float = 0.0
    server_cpu: float = 0.0

    def cpu_ms_per_trial(self) -> float:
        return 1000 * (self.cpu + self.server_cpu) / len(self.ends)

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
    cpu = process_cpu()
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
    run.cpu = process_cpu() - cpu
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(done) != trials:
        raise BenchError(f"Optuna completed {len(done)} of {trials} trials")
    storage.engine.dispose()
    return run, counter


# -- the service ----------------------------------------------------------------------------


class HttpWorker:
    """One registered worker talking to the server through the project's client."""

    def __init__(self, server: str, name: str) -> None:
        self.client = WorkerClient(server, retry_seconds=5.0)
        registered = self.client.register(name, socket.gethostname(), os.getpid(), "cpu", {})
        self.worker_id = registered.worker_id

    def lease(self) -> list[tuple[int, str]]:
        return [(a.trial_id, a.token) for a in self.client.lease(self.worker_id)]

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> str:
        return self.client.report(self.worker_id, trial_id, token, epoch, metrics)

    def complete(self, trial_id: int, token: str) -> list[tuple[int, str]]:
        """Complete the trial and lease the next one in the same request, as `hpo worker`
        does (`run_trial(lease_next=True)`)."""
        done = self.client.complete(self.worker_id, trial_id, token, lease=1, held=[])
        return [(a.trial_id, a.token) for a in done.assignments]


class DomainWorker:
    """The same worker calling the server's `Protocol` in this process (no HTTP)."""

    def __init__(self, protocol: Any, name: str) -> None:
        self.protocol = protocol
        self.worker_id = protocol.leasing.register(
            name, socket.gethostname(), os.getpid(), "cpu", {}
        ).id

    def lease(self) -> list[tuple[int, str]]:
        return [
            (a.trial.id, a.trial.lease_token) for a in self.protocol.leasing.lease(self.worker_id)
        ]

    def report(self, trial_id: int, token: str, epoch: int, metrics: dict[str, float]) -> str:
        return str(self.protocol.reporting.report(trial_id, token, epoch, metrics).value)

    def complete(self, trial_id: int, token: str) -> list[tuple[int, str]]:
        """As the completion route does with `lease: 1`: complete, then lease."""
        self.protocol.reporting.complete(trial_id, token)
        return [
            (a.trial.id, a.trial.lease_token)
            for a in self.protocol.leasing.lease(self.worker_id, 1, [])
        ]


def drive(
    worker: HttpWorker | DomainWorker,
    run: Run,
    seed: int,
    trials: int | None = None,
    leased: list[tuple[int, str]] | None = None,
) -> list[tuple[int, str]]:
    """The no-op trainer as `hpo worker` drives a trial: lease one, report every epoch, then
    complete it with the next trial leased in the same call; until no work is left (or
    `trials` are done). Returns the trial leased with the last completion (`leased` of the
    next call)."""
    rng = random.Random(seed)
    leased = leased or []
    while trials is None or len(run.ends) < trials:
        leased = leased or run.timed("lease", worker.lease)
        if not leased:
            return []
        trial_id, token = leased[0]
        for epoch in range(1, EPOCHS + 1):
            metrics = fake_metrics(rng, epoch)
            decision = run.timed("report", worker.report, trial_id, token, epoch, metrics)
            if decision != "continue":
                raise BenchError(f"trial {trial_id} epoch {epoch}: the server said {decision}")
        leased = run.timed("complete + lease", worker.complete, trial_id, token)
        run.ends.append(time.perf_counter())
    return leased


def check_study(client: Client, study_id: int, trials: int) -> None:
    study = client.study(study_id)
    if study["state"] != "completed" or study["counts"]["completed"] != trials:
        raise BenchError(f"study ended {study['state']} with counts {study['counts']}")


def run_service(url: str, trials: int, server_pid: int | None = None) -> Run:
    """One worker's loop over HTTP; with `server_pid`, the server's CPU time is counted too."""
    client = Client(url)
    study = client.create_study(study_spec("bench", trials, parallel=1))
    worker = HttpWorker(url, "bench-worker")
    run = Run()
    cpu, server_cpu = process_cpu(), process_cpu(server_pid) if server_pid else 0.0
    drive(worker, run, seed=0)
    run.cpu = process_cpu() - cpu
    run.server_cpu = process_cpu(server_pid) - server_cpu if server_pid else 0.0
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
    user = Client(url)
    run = Run()
    for _ in range(calls):
        run.timed("GET /healthz", user.health)
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
    counter = SqlCounter(services.db.engine, protocol.context.storage.engine)
    services.studies.create(study_spec("bench", trials + profiled, parallel=1))
    worker = DomainWorker(protocol, "in-process")
    run = Run(counter=counter)
    cpu = process_cpu()
    leased = drive(worker, run, seed=0, trials=trials)
    run.cpu = process_cpu() - cpu
    profiler = cProfile.Profile()
    profiler.runcall(drive, worker, Run(), 1, None, leased)
    services.db.dispose()
    return run, pstats.Stats(profiler)
