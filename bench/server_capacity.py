"""Server capacity: simulated workers (no training, real HTTP clients) report epochs of many
trials in flight to one real `hpo server`, on SQLite and on PostgreSQL, the latter served by 1,
2 and 4 server processes.

    python bench/server_capacity.py [--databases sqlite postgres] [--in-flight 64 256 1024]
        [--processes 1 2 4] [--modes single batched paced] [--workers 8] [--seconds 5]
        [--epoch-seconds 1.0] [--postgres-url URL]

For each database (a fresh SQLite file; a fresh PostgreSQL database made through the admin URL
`--postgres-url`, default HPO_TEST_POSTGRES_URL), each number of server processes P
(`--processes`, PostgreSQL only: SQLite is served by one) and each number of trials in flight T:

1. One `hpo server --processes P` (tests/support's launcher and port helper) and a study with
   `parallel_trials: T` and more epochs than any run reaches, leases of an hour (no heartbeats
   are simulated); `--workers` simulated workers (threads, each its own
   `trainer.client.WorkerClient`) register and lease T/W trials each. A worker keeps its
   connection, so the kernel spreads the workers (not their requests) over the P processes.
2. `single`: for `--seconds`, each worker sends its trials' next epochs one report (one
   request) at a time, as a worker did before batched reports.
3. `batched`: for `--seconds`, each worker sends all its trials' next epochs in one
   `POST /api/v1/workers/{id}/reports`, again and again.
4. `paced` (only when asked for): a realistic offered load instead of a closed loop at
   saturation: each worker's T/W trials finish an epoch together every `--epoch-seconds`, as
   a fused group's do, and their reports go in one batched request; the workers' phases are
   spread evenly over the epoch. Its latency is a request's, as in the other modes, and its
   rate the offered T / `--epoch-seconds` when the server keeps up.
5. Before 2 to 4, Optuna's own `trial.report` on an RDBStorage of the same database (the
   service's engine set-up, a study of its own), one thread, for `--seconds`: the rate a script
   calling Optuna directly gets, measured seconds before the runs it is compared with.

Reported: trial-epochs recorded per second, p50 / p99 latency of a request (a report, or a
batch of T/W), the server's CPU time a request (its processes' user + system time over the
run, from /proc, divided by the requests: what a request costs the server whatever else runs on
the machine) and the client's (this process's CPU time over the run, `time.process_time`,
divided by the requests: what the simulated workers' `WorkerClient` calls cost, building each
request, sending it with httpx and parsing its answer, which a real worker pays too on the
machine it trains on), per database, P and T; and what the set-up's leases took over HTTP, in ms a
leased trial (the first and the last lease request of each worker, LEASE_CHUNK trials each).
Every answer must be `continue`; anything else stops the run. The simulated workers share the
2-core machine with the server, as a worker would. They also share one Python process, unlike
real workers: its full garbage collections (80 to 160 ms, all 8 stopped at once) made the p99
at 1024 in flight partly the benchmark's own, so before the runs the process settles its heap
as a served process does (`service.serve.settle_heap`); `--client-gc default` leaves
Python's collector as it is, as before round 7.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import optuna
from reporting import code_version, machine, markdown_table, median, ms, quantile

from hpo.protocol import Assignment, Decision, TrialReport
from service.serve import settle_heap
from service.storage.db import open_optuna_storage
from tests.support.databases import scratch_postgres
from tests.support.processes import Processes
from trainer.client import WorkerClient

# Trials asked for per lease request (64 at most): each is sampled in the request, and on a loaded
# 2-core machine a lease of 64 in a study of 1024 trials took 6 to 15 s, near the client's timeout.
LEASE_CHUNK = 32


# What the set-up's leases took, a row per server run (see main's second table).
LEASES: list[list[object]] = []


class BenchError(Exception):
    pass


@dataclass
class Point:
    """One measured run: trial-epochs recorded and each request's latency."""

    seconds: float = 0.0
    epochs: int = 0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # seconds of the server's processes during the run
    client_cpu: float = 0.0  # seconds of this process (the simulated workers) during the run

    @property
    def rate(self) -> float:
        return self.epochs / self.seconds if self.seconds else 0.0


def spec(name: str, in_flight: int) -> dict[str, object]:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": in_flight, "parallel_trials": in_flight, "epochs": 100_000},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
        "workload": {"model": "mlp", "dataset": "synthetic"},
    }


class SimulatedWorker:
    """A worker that holds its trials and reports their epochs with made-up metrics."""

    def __init__(self, url: str, name: str, trials: int) -> None:
        # A long timeout: under load a lease of LEASE_CHUNK trials or a batch may take long,
        # and that is what is measured, not a failure.
        self.client = WorkerClient(url, timeout=600)
        self.id = self.client.register(name, "bench", os.getpid(), "cpu", {}).worker_id
        self.leases: list[Assignment] = []
        self.lease_ms: list[float] = []  # of each lease request, per leased trial
        while len(self.leases) < trials:
            started = time.perf_counter()
            got = self.client.lease(self.id, min(LEASE_CHUNK, trials - len(self.leases)))
            if not got:
                raise BenchError(f"{name} leased {len(self.leases)} of {trials} trials")
            self.lease_ms.append(1000 * (time.perf_counter() - started) / len(got))
            self.leases.extend(got)
        self.epoch = 0

    def _items(self) -> list[TrialReport]:
        self.epoch += 1
        value = 1 - 1 / (self.epoch + 1)
        metrics = {"val_accuracy": value, "val_loss": 1 - value, "epoch_seconds": 0.01}
        return [
            TrialReport(trial_id=a.trial_id, token=a.token, epoch=self.epoch, metrics=metrics)
            for a in self.leases
        ]

    def run_paced(
        self, epoch_seconds: float, phase: float, until: float, point: Point, lock: threading.Lock
    ) -> None:
        """All the worker's trials finish an epoch together every `epoch_seconds` (as a fused
        group does), the first at `phase` seconds; each time, their reports go in one
        request. A request answered late delays the next epoch's (as a worker waits)."""
        due = time.monotonic() + phase
        while due < until:
            time.sleep(max(0.0, due - time.monotonic()))
            items = self._items()
            started = time.perf_counter()
            results = self.client.report_many(self.id, items)
            took = time.perf_counter() - started
            if any(r.decision is not Decision.CONTINUE for r in results):
                raise BenchError(f"a report was answered {set(r.decision for r in results)}")
            with lock:
                point.epochs += len(items)
                point.latencies.append(took)
            due += epoch_seconds

    def run(self, batched: bool, until: float, point: Point, lock: threading.Lock) -> None:
        while time.monotonic() < until:
            items = self._items()
            if batched:
                started = time.perf_counter()
                results = self.client.report_many(self.id, items)
                took = [time.perf_counter() - started]
                decisions = [r.decision for r in results]
            else:
                took, decisions = [], []
                for item in items:
                    started = time.perf_counter()
                    decisions.append(
                        self.client.report(
                            self.id, item.trial_id, item.token, item.epoch, item.metrics
                        )
                    )
                    took.append(time.perf_counter() - started)
            if any(d is not Decision.CONTINUE for d in decisions):
                raise BenchError(f"a report was answered {set(decisions)}")
            with lock:
                point.epochs += len(items)
                point.latencies.extend(took)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its descendants (uvicorn's children for
    `--processes`), from /proc; 0 where there is no /proc."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        pending += [int(child) for child in children]
    return total


def measure(
    workers: list[SimulatedWorker],
    mode: str,
    seconds: float,
    epoch_seconds: float = 1.0,
    server_pid: int | None = None,
) -> Point:
    point, lock, errors = Point(), threading.Lock(), []
    until = time.monotonic() + seconds

    def body(worker: SimulatedWorker) -> None:
        try:
            if mode == "paced":
                phase = epoch_seconds * workers.index(worker) / len(workers)
                worker.run_paced(epoch_seconds, phase, until, point, lock)
            else:
                worker.run(mode == "batched", until, point, lock)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in workers]
    cpu = cpu_seconds(server_pid) if server_pid else 0.0
    client_cpu = time.process_time()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    point.seconds = time.monotonic() - started
    point.client_cpu = time.process_time() - client_cpu
    point.server_cpu = cpu_seconds(server_pid) - cpu if server_pid else 0.0
    if errors:
        raise BenchError(f"a simulated worker failed: {errors[0]!r}") from errors[0]
    return point


def optuna_reports(url: str, seconds: float, name: str = "optuna-reports") -> Point:
    """Optuna's own `trial.report` calls, one thread, in a new study `name` at `url`."""
    storage = open_optuna_storage(url)
    study = optuna.create_study(storage=storage, study_name=name)
    trial = study.ask()
    point, step = Point(), 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        step += 1
        before = time.perf_counter()
        trial.report(1 - 1 / (step + 1), step)
        point.latencies.append(time.perf_counter() - before)
    point.seconds, point.epochs = time.monotonic() - started, step
    storage.engine.dispose()
    return point


@contextmanager
def database(kind: str, folder: Path, admin_url: str | None, name: str) -> Iterator[str]:
    """A fresh database URL of `kind`: a SQLite file in `folder`, or a PostgreSQL database
    created through `admin_url` and dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    if not admin_url:
        raise BenchError("postgres needs --postgres-url or HPO_TEST_POSTGRES_URL")
    with scratch_postgres(admin_url, f"hpo_bench_{name}") as url:
        yield url


def run_database(kind: str, args: argparse.Namespace, folder: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    for procs in args.processes if kind == "postgres" else [1]:
        for in_flight in args.in_flight:
            rows.extend(run_server(kind, args, folder, procs, in_flight))
    return rows


def run_server(
    kind: str, args: argparse.Namespace, folder: Path, procs: int, in_flight: int
) -> list[list[object]]:
    """Optuna's own rate, then the runs of `--modes` against one `hpo server --processes
    procs` and T trials, all on one database, one after the other (on a shared machine the
    load changes from minute to minute, so each ratio compares runs seconds apart)."""
    rows: list[list[object]] = []
    with (
        database(kind, folder, args.postgres_url, f"p{procs}t{in_flight}") as url,
        Processes(folder) as processes,
    ):
        # Leases long enough for the set-up and a run: the simulated workers send no
        # heartbeats, and a trial's next report may come a whole round of T/W later.
        server = processes.server(
            f"server-{kind}-{procs}-{in_flight}",
            "--processes",
            str(procs),
            HPO_DATABASE_URL=url,
            HPO_LEASE_SECONDS="3600",
        )
        WorkerClient(server).call("POST", "/api/v1/studies", body=spec("cap", in_flight))
        n = min(args.workers, in_flight)
        workers = [
            SimulatedWorker(server, f"sim{i}", in_flight // n + (i < in_flight % n))
            for i in range(n)
        ]
        pid = processes.named[f"server-{kind}-{procs}-{in_flight}"].pid
        raw = optuna_reports(url, args.seconds, f"optuna-reports-{procs}-{in_flight}")
        rows.append([kind, procs, in_flight, "Optuna `trial.report`, 1 thread", raw.epochs,
                     f"{raw.rate:.0f}", "1.00", ms(median(raw.latencies)),
                     ms(quantile(raw.latencies, 0.99)), "-", "-"])  # fmt: skip
        print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
        leases = [ms for w in workers for ms in (w.lease_ms[0], w.lease_ms[-1])]
        LEASES.append([kind, procs, in_flight, f"{min(leases):.1f}", f"{median(leases):.1f}",
                       f"{max(leases):.1f}"])  # fmt: skip
        if args.client_gc == "settled":
            settle_heap()  # the set-up's objects out of the collector's walk during the runs
        for mode in args.modes:
            point = measure(workers, mode, args.seconds, args.epoch_seconds, pid)
            per = "1 report" if mode == "single" else f"{in_flight // n} reports"
            if mode == "paced":
                per = f"{in_flight // n} reports a request every {args.epoch_seconds:g} s"
            else:
                per += " a request"
            rows.append([kind, procs, in_flight, f"{mode} ({n} workers, {per})",
                         point.epochs, f"{point.rate:.0f}", f"{point.rate / raw.rate:.2f}",
                         ms(median(point.latencies)),
                         ms(quantile(point.latencies, 0.99)),
                         ms(point.server_cpu / len(point.latencies)),
                         ms(point.client_cpu / len(point.latencies))])  # fmt: skip
            print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
        gc.unfreeze()  # this server's workers may go once its runs are done
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2, 4], help="server processes (PostgreSQL)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["single", "batched"],
        choices=["single", "batched", "paced"],
    )
    parser.add_argument(
        "--epoch-seconds", type=float, default=1.0, help="paced: a trial's epoch takes this long"
    )
    parser.add_argument("--workers", type=int, default=8, help="simulated workers")
    parser.add_argument("--seconds", type=float, default=5.0, help="of each measured run")
    parser.add_argument("--postgres-url", default=os.environ.get("HPO_TEST_POSTGRES_URL"))
    parser.add_argument(
        "--client-gc",
        choices=["settled", "default"],
        default="settled",
        help="the simulated workers' process: its heap settled before the runs, or Python's"
        " collector as it is",
    )
    args = parser.parse_args(argv)
    if any(t > 1024 for t in args.in_flight):
        parser.error("--in-flight: a study runs at most 1024 trials at once")
    load = [os.getloadavg()[0]]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="hpo-capacity-") as tmp:
        for kind in args.databases:
            rows.extend(run_database(kind, args, Path(tmp)))
    load.append(os.getloadavg()[0])
    print(f"Simulated workers over HTTP against one `hpo server [--processes P]`, "
          f"{args.seconds:g} s a run.\n")  # fmt: skip
    described = machine("optuna", "sqlalchemy", "fastapi", "uvicorn").line()
    print(f"Machine: {described}; 1-minute load average at start / end: "
          f"{load[0]:.1f} / {load[1]:.1f}.\n")  # fmt: skip
    print(f"Code: {code_version('service', 'trainer', 'hpo')}.\n")
    header = ["database", "server processes", "trials in flight", "run", "trial-epochs",
              "trial-epochs/s", "/ Optuna", "p50 ms a request", "p99 ms a request",
              "server CPU ms a request", "client CPU ms a request"]  # fmt: skip
    print(markdown_table(header, rows, text=4))
    print("\nThe set-up's lease requests over HTTP (each worker's first and last, "
          f"{LEASE_CHUNK} trials each), ms a leased trial:\n")  # fmt: skip
    header = ["database", "server processes", "trials in flight", "min", "median", "max"]
    print(markdown_table(header, LEASES, text=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
