"""What bench/service_overhead.py measures: the no-op trainer's loop of lease, 10 epoch reports
and complete, driven over HTTP against a real `hpo server` by `hpo worker`'s own classes
(trainer.worker.DeviceWorker: reports held and sent together when no pruner reads them, the last
epoch with the completion) or in process against `Protocol` the same way, and Optuna's own ask /
report / tell for comparison; each timed call by kind, with SQL counted."""

from __future__ import annotations

import cProfile
import os
import pstats
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import optuna
from sqlalchemy import Engine, event

from hpo.client import ApiError, Client
from hpo.protocol import Decision
from service.app import build_services
from service.settings import Settings
from service.storage.db import open_optuna_storage
from trainer.client import WorkerClient
from trainer.train import TrainResult
from trainer.worker import DeviceWorker

EPOCHS = 10
METRIC = "val_accuracy"
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}


class BenchError(Exception):
    """The benchmark did not do what it measures (a refused call, a missing trial)."""


def study_spec(name: str, trials: int, parallel: int, pruner: str = "none") -> dict[str, Any]:
    """The benchmark's study: `pruner` is its `early_stopping` (none, median)."""
    return {
        "name": name,
        "objective": {"metric": METRIC, "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0, "early_stopping": pruner},
        "budget": {"max_trials": trials, "parallel_trials": parallel, "epochs": EPOCHS},
        "space": SPACE,
        "workload": {"model": "mlp", "dataset": "synthetic"},
        # The no-op trainer has no model file to keep. A study that keeps models (the default)
        # has each trial's last report sent at once, before the model's upload: one more.
        "keep_models": 0,
    }


def fake_metrics(epoch: int, trial: int) -> dict[str, float]:
    """What the trainer reports after an epoch, made up: the trainer here is a no-op. Each
    trial is a little better than the one before (`trial`: its index), so that a median
    pruner, asked at every report, prunes none: every study runs the same trials."""
    accuracy = min(0.99, 0.5 + 0.04 * epoch + 1e-5 * trial)
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
    requests: int = 0  # HTTP requests the server answered during the loop

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


def run_optuna(url: str, trials: int, pruner: str = "none") -> tuple[Run, SqlCounter]:
    """Optuna's own loop; `pruner` none (NopPruner) or median (the service's MedianPruner
    settings: 3 start-up trials, 1 warm-up step)."""
    storage = open_optuna_storage(url)
    counter = SqlCounter(storage.engine)
    study = optuna.create_study(
        storage=storage,
        study_name="bench",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if pruner == "median"
        else optuna.pruners.NopPruner(),
    )
    run = Run()
    cpu = process_cpu()
    for number in range(trials):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 0.1, log=True)
        trial.suggest_float("dropout", 0.0, 0.5)
        value = 0.0
        for epoch in range(1, EPOCHS + 1):
            value = fake_metrics(epoch, number)[METRIC]
            trial.report(value, epoch)
            if trial.should_prune():
                raise BenchError(f"the {pruner} pruner pruned a trial")
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
    """One registered worker over HTTP, driven by `hpo worker`'s own classes: a
    trainer.worker.DeviceWorker's lease, report (held while the lease's `report_interval` has
    not passed; the report of the epoch before the last leases the next trial ahead) and
    finish (the completion carries the held reports, and leases the next trial when the
    lease ahead brought none), with a no-op trainer."""

    def __init__(self, server: str, name: str) -> None:
        self.client = WorkerClient(server, retry_seconds=5.0)
        self.device = DeviceWorker(self.client, "cpu", name=name)
        registered = self.client.register(name, socket.gethostname(), os.getpid(), "cpu", {})
        self.device.worker_id = registered.worker_id
        self.worker_id = registered.worker_id

    def lease(self) -> list[Any]:
        return self.client.lease(self.worker_id, held=[])

    def train(self, run: Run, assignment: Any, number: int) -> list[Any]:
        """Report its epochs (made up) and complete it; the next trial leased with it."""
        lease = self.device.lease_for(assignment)
        metrics: dict[str, float] = {}
        for epoch in range(1, EPOCHS + 1):
            metrics = fake_metrics(epoch, number)
            decision = run.timed("report", self.device.report_epoch, lease, epoch, metrics)
            if decision is not Decision.CONTINUE:
                raise BenchError(f"trial {lease.trial_id} epoch {epoch}: {decision.value}")
        result = TrainResult(EPOCHS, metrics, None)
        label = f"trial #{assignment.number}"
        finish = self._finish
        nxt: list[Any] = run.timed("complete + lease", finish, assignment, lease, label, result)
        if not nxt and self.client.call("GET", f"/api/v1/trials/{lease.trial_id}")["state"] != (
            "completed"
        ):
            raise BenchError(f"trial {lease.trial_id} did not complete")
        return nxt

    def _finish(self, assignment: Any, lease: Any, label: str, result: TrainResult) -> list[Any]:
        """As DeviceWorker.run_trial ends a trial: the trials leased ahead (while its last
        epoch reported), else those its completion leases; the completion answered."""
        ahead = self.device.take_ahead()
        done = self.device.finish(assignment, lease, label, result, 0.0, not ahead)
        nxt = self.device.answer(done)
        return ahead or nxt


class DomainWorker:
    """The same worker calling the server's `Protocol` in this process (no HTTP), as
    HttpWorker's DeviceWorker calls it for a no-op trainer: a study without a pruner has
    every report held (all its epochs take well under the report interval) and sent with the
    completion; with one, each report but the last is sent on its own."""

    def __init__(self, protocol: Any, name: str) -> None:
        self.protocol = protocol
        self.worker_id = protocol.leasing.register(
            name, socket.gethostname(), os.getpid(), "cpu", {}
        ).id

    def lease(self) -> list[Any]:
        return list(self.protocol.leasing.lease(self.worker_id, 1, []))

    def train(self, run: Run, leased: Any, number: int) -> list[Any]:
        trial_id, token = leased.trial.id, leased.trial.lease_token
        held = leased.spec.strategy.early_stopping == "none"
        reports = [(epoch, fake_metrics(epoch, number)) for epoch in range(1, EPOCHS + 1)]
        final = reports if held else reports[-1:]
        for epoch, metrics in [] if held else reports[:-1]:
            decision = run.timed(
                "report", self.protocol.reporting.report, trial_id, token, epoch, metrics
            )
            if decision is not Decision.CONTINUE:
                raise BenchError(f"trial {trial_id} epoch {epoch}: {decision.value}")
        return list(run.timed("complete + lease", self._complete, trial_id, token, final))

    def _complete(self, trial_id: int, token: str, reports: list[Any]) -> list[Any]:
        """As the completion route does with `lease: 1`: complete, then lease."""
        row = self.protocol.reporting.complete(trial_id, token, None, reports)
        if row.state.value != "completed":
            raise BenchError(f"trial {trial_id} ended {row.state.value}")
        return list(self.protocol.leasing.lease(self.worker_id, 1, []))


def drive(
    worker: HttpWorker | DomainWorker,
    run: Run,
    trials: int | None = None,
    leased: list[Any] | None = None,
) -> list[Any]:
    """The no-op trainer as `hpo worker` drives a trial: lease one, report its epochs, then
    complete it with the next trial leased in the same call; until no work is left (or
    `trials` are done). Returns the trial leased with the last completion (`leased` of the
    next call)."""
    leased = leased or []
    number = 0
    while trials is None or len(run.ends) < trials:
        leased = leased or run.timed("lease", worker.lease)
        if not leased:
            return []
        leased = worker.train(run, leased[0], number)
        number += 1
        run.ends.append(time.perf_counter())
    return leased


def server_requests(url: str) -> int:
    """The worker-protocol requests (POST /api/v1/workers/...) the server has answered so
    far, from its /metrics."""
    prefix = 'hpo_http_requests_total{method="POST",route="/api/v1/workers/'
    lines = httpx.get(url + "/metrics", timeout=30).text.splitlines()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix)))


def check_study(client: Client, study_id: int, trials: int) -> None:
    study = client.study(study_id)
    if study["state"] != "completed" or study["counts"]["completed"] != trials:
        raise BenchError(f"study ended {study['state']} with counts {study['counts']}")


def run_service(url: str, trials: int, server_pid: int | None = None, pruner: str = "none") -> Run:
    """One worker's loop over HTTP on a study with `pruner` (its early_stopping); with
    `server_pid`, the server's CPU time is counted too."""
    client = Client(url)
    study = client.create_study(study_spec(f"bench-{pruner}", trials, parallel=1, pruner=pruner))
    worker = HttpWorker(url, f"bench-worker-{pruner}")
    run = Run()
    cpu, server_cpu = process_cpu(), process_cpu(server_pid) if server_pid else 0.0
    requests = server_requests(url)
    drive(worker, run)
    run.cpu = process_cpu() - cpu
    run.server_cpu = process_cpu(server_pid) - server_cpu if server_pid else 0.0
    run.requests = server_requests(url) - requests
    check_study(client, study["id"], trials)
    return run


def refused_report(worker: HttpWorker) -> None:
    """A report that request validation refuses (epoch 0): no route code, no database."""
    try:
        worker.client.report(worker.worker_id, 1, "token", 0, {METRIC: 0.5})
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
        threading.Thread(target=drive, args=(HttpWorker(url, f"bench-{i}"), runs[i]))
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
    leased = drive(worker, run, trials=trials)
    run.cpu = process_cpu() - cpu
    profiler = cProfile.Profile()
    profiler.runcall(drive, worker, Run(), None, leased)
    services.db.dispose()
    return run, pstats.Stats(profiler)
