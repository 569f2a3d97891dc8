"""Service overhead: the whole life of N trials through the hpo server's HTTP API with a no-op
trainer, against Optuna's own ask / report / tell on an RDBStorage of the same SQLite kind.

    python bench/service_overhead.py --trials 1000 [--workers 4]

Each part runs on a fresh SQLite file in one temporary folder:

1. Optuna, before the service and again at the end: `study.ask()`, two `suggest_float`,
   10x (`report` + `should_prune`), `study.tell`, on `open_optuna_storage` (the service's WAL,
   busy timeout, synchronous=NORMAL, BEGIN IMMEDIATE); once with `NopPruner` (the service
   study with `early_stopping: none` consults none either) and once with the MedianPruner the
   service builds for `early_stopping: median`.
2. Service over HTTP: a real `hpo server` subprocess; one registered worker, driven by
   `hpo worker`'s own trainer.worker.DeviceWorker with a no-op trainer, leases a trial, reports
   10 epochs and completes it with the next trial leased in the same request, N times: on a
   study without a pruner its reports are held (the lease's `report_interval`) and all ten
   travel with the completion, one request a trial; on a study with `early_stopping: median`
   each of the first nine is sent and its answer waited for, the tenth with the completion.
   The CPU time of the server process and of this one is counted besides the wall time, and
   the worker-protocol requests the server answered (its /metrics). Baselines: `GET /healthz`
   (HTTP, no database) and a report with epoch 0 (refused 422 by request validation: HTTP
   plus body parsing, no database).
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
import os
import pstats
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
from overhead_loops import (  # bench/overhead_loops.py and the others: beside this script
    EPOCHS,
    Run,
    SqlCounter,
    baselines,
    run_in_process,
    run_optuna,
    run_service,
    run_service_threads,
)
from overhead_profile import profile_tables, top_functions
from reporting import code_version, machine, markdown_table, median, ms, quantile

from tests.support.processes import Processes

# -- the report -----------------------------------------------------------------------------


@dataclass
class Results:
    trials: int
    optuna: list[Run]  # before and after the service runs: the machine's load may change
    optuna_sql: SqlCounter
    service: Run
    optuna_median: list[Run]  # the same with the MedianPruner, before and after
    service_median: Run
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


def machine_line(load: list[tuple[float, float, float]]) -> str:
    loads = " / ".join(f"{avg[0]:.1f}" for avg in load)
    described = machine("optuna", "sqlalchemy", "fastapi", "uvicorn").line()
    return f"{described}, no GPU used; 1-minute load average at start / end: {loads}"


def rates_table(r: Results) -> str:
    base = r.fastest_optuna.rate()
    runs = [
        (f"Optuna ask / report / tell, RDBStorage, {when} the service", run)
        for when, run in zip(("before", "after"), r.optuna, strict=True)
    ]
    runs.append(("service over HTTP, 1 worker", r.service))
    runs += [
        (f"Optuna with MedianPruner, {when} the service", run)
        for when, run in zip(("before", "after"), r.optuna_median, strict=True)
    ]
    runs.append(("service over HTTP, 1 worker, `early_stopping: median`", r.service_median))
    runs += [(f"service over HTTP, {k} worker threads", run) for k, run in r.threads.items()]
    runs.append(("service in process (`Protocol`, no HTTP)", r.domain))
    rows = []
    for name, run in runs:
        first, last = run.tenth_rates()
        rate = run.rate()
        rows.append(
            (name, len(run.ends), f"{run.seconds:.1f}", f"{rate:.1f}", f"{first:.1f}",
             f"{last:.1f}", f"{rate / base:.2f}")
        )  # fmt: skip
    header = ("run", "trials", "seconds", "trials/s", "first 10%: trials/s",
              "last 10%: trials/s", "/ Optuna")  # fmt: skip
    return markdown_table(header, rows)


def cpu_table(r: Results) -> str:
    """CPU time per trial, which the machine's load changes far less than the rates: on an
    idle machine a sequential loop's wall time is about its CPU time plus the wake-ups."""
    base = min(run.cpu_ms_per_trial() for run in r.optuna)
    median_base = min(run.cpu_ms_per_trial() for run in r.optuna_median)

    def http(name: str, run: Run, against: float) -> tuple[object, ...]:
        per_trial = 1000 / len(run.ends)
        return (
            name,
            f"{run.requests / len(run.ends):.1f}",
            f"{run.cpu_ms_per_trial():.1f}",
            f"{per_trial * run.server_cpu:.1f}",
            f"{per_trial * run.cpu:.1f}",
            f"{against / run.cpu_ms_per_trial():.2f}",
        )

    rows = [
        ("Optuna ask / report / tell, NopPruner (the cheaper run)", "-", f"{base:.1f}", "-",
         "-", "1.00"),
        http("service over HTTP, no pruner: server + client", r.service, base),
        ("service in process (`Protocol`, no HTTP), no pruner", "-",
         f"{r.domain.cpu_ms_per_trial():.1f}", "-", "-",
         f"{base / r.domain.cpu_ms_per_trial():.2f}"),
        ("Optuna with MedianPruner (the cheaper run)", "-", f"{median_base:.1f}", "-", "-",
         "1.00"),
        http("service over HTTP, `early_stopping: median`: server + client", r.service_median,
             median_base),
    ]  # fmt: skip
    header = ("run", "requests per trial", "CPU ms per trial", "of which server",
              "of which client", "rate / Optuna's (same pruner)")  # fmt: skip
    return markdown_table(header, rows)


def latency_rows(run: Run, shares: bool = True) -> list[tuple[object, ...]]:
    """Median and p95 per call kind, the median over the first and last tenth of the calls,
    the share of the run's time and (when counted) SQL statements and commits per call."""
    total = sum(sum(v) for v in run.latency.values())
    rows: list[tuple[object, ...]] = []
    for kind, values in run.latency.items():
        tenth = max(1, len(values) // 10)
        work = run.sql.get(kind)
        sql = "-"
        if work:
            sql = f"{sum(w[0] for w in work) / len(work):.1f} / "
            sql += f"{sum(w[1] for w in work) / len(work):.1f}"
        share = f"{100 * sum(values) / total:.0f}%" if shares else "-"
        rows.append(
            (kind, len(values), ms(median(values)), ms(quantile(values, 0.95)),
             ms(median(values[:tenth])), ms(median(values[-tenth:])), share, sql)
        )  # fmt: skip
    return rows


def latency_table(title: str, *rows: list[tuple[object, ...]]) -> str:
    header = (title, "calls", "median ms", "p95 ms", "first 10%: median", "last 10%: median",
              "share of time", "SQL statements / commits")  # fmt: skip
    return markdown_table(header, [row for part in rows for row in part])


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
        f"- Transport: {r.service.requests / r.trials:.1f} worker-protocol requests per trial "
        f"without a pruner, {r.service_median.requests / r.trials:.1f} with the median pruner "
        f"(the next lease rides on the completion); at the `GET /healthz` median of "
        f"{ms(healthz)} ms that is {r.service.requests / r.trials * healthz * 1000:.1f} and "
        f"{r.service_median.requests / r.trials * healthz * 1000:.1f} ms per trial.",
    ]


def report(r: Results) -> str:
    lines = [
        f"N = {r.trials} trials of {EPOCHS} epochs each (no-op trainer), random sampler, two float "
        "params, one SQLite file per run.",
        "",
        f"Machine: {machine_line(r.load)}.",
        "",
        f"Code: {code_version('service', 'trainer')}.",
        "",
        rates_table(r),
        "",
        f"**service / Optuna = {r.service.rate() / r.fastest_optuna.rate():.2f}** (1 worker over "
        f"HTTP, against the faster Optuna run; {r.service.rate() / r.slowest_optuna.rate():.2f} "
        "against the slower); with the median pruner "
        f"{r.service_median.rate() / max(run.rate() for run in r.optuna_median):.2f}.",
        "",
        cpu_table(r),
        "",
        latency_table(
            "request (HTTP, 1 worker)", latency_rows(r.service), latency_rows(r.baseline, False)
        ),
        "",
        latency_table("call (in process, no HTTP)", latency_rows(r.domain)),
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
        median_before, _ = run_optuna(f"sqlite:///{folder}/median.db", args.trials, "median")
        with Processes(folder) as processes:
            url = processes.server()
            pid = processes.process("server").pid
            baseline = baselines(url, args.baseline_calls)
            service = run_service(url, args.trials, pid)
            service_median = run_service(url, args.trials, pid, pruner="median")
            threads = {k: run_service_threads(url, args.trials, k) for k in args.workers}
        in_process = min(args.trials, args.in_process_trials)
        domain, profile = run_in_process(folder, in_process, args.profile_trials)
        after, _ = run_optuna(f"sqlite:///{folder}/optuna_after.db", args.trials)
        median_after, _ = run_optuna(f"sqlite:///{folder}/median_after.db", args.trials, "median")
    load.append(os.getloadavg())
    results = Results(
        args.trials, [before, after], optuna_sql, service, [median_before, median_after],
        service_median, baseline, threads, domain, profile, args.profile_trials, load,
    )  # fmt: skip
    print(report(results))
    print()
    print(top_functions(profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
