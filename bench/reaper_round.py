"""What one round of the server's reaper costs, in process: the expired leases' round alone
(`Reaping.reap`, what a round was before issue 14's clean-up) against the whole round now
(`reap`, then `tidy_optuna`, which looks for what a stopped server left running in
Optuna), on a fresh SQLite file or PostgreSQL database.

    python bench/reaper_round.py [--databases sqlite postgres] [--studies 4] [--running 256]
        [--completed 256] [--rounds 20] [--postgres-url URL]

Each of `--studies` random-search studies has `--completed` completed trials and `--running`
trials leased and running (nothing expired, nothing left over: the round's usual case, which
still reads every running Optuna trial and, for a study with some, which its trials name).
The two kinds of round alternate, `--rounds` each; reported: the median wall ms of a round,
this process's CPU ms a round (every thread's), and the SQL statements and commits of one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
from overhead_loops import SqlCounter
from reporting import markdown_table, median
from server_costs import on_each_database

from hpo.protocol import TrialReport
from service.app import create_app
from service.domain.protocol import Protocol
from service.settings import Settings


def spec(name: str, trials: int) -> dict[str, object]:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": trials, "parallel_trials": trials, "epochs": 1},
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        },
        "workload": {"model": "mlp", "dataset": "synthetic"},
    }


def fill(protocol: Protocol, worker: int, completed: int, running: int) -> None:
    """Lease `completed` trials and complete them (one epoch each), then lease `running`."""
    done = 0
    while done < completed:
        leased = protocol.leasing.lease(worker, min(32, completed - done))
        reports = [
            TrialReport(trial_id=a.trial.id, token=a.trial.lease_token or "", epoch=1,
                        metrics={"val_accuracy": 0.5})
            for a in leased
        ]  # fmt: skip
        protocol.reporting.report_many(reports)
        for a in leased:
            protocol.reporting.complete(a.trial.id, a.trial.lease_token or "")
        done += len(leased)
    held = 0
    while held < running:
        held += len(protocol.leasing.lease(worker, min(32, running - held)))


def measure(kind: str, url: str, folder: Path, args: argparse.Namespace) -> list[list[object]]:
    # Leases of an hour: nothing expires, and no finished trial is a lease old.
    settings = Settings(database_url=url, artifacts_dir=folder / "artifacts", lease_seconds=3600)
    app = create_app(settings, reaper=False)
    services = app.state.services
    protocol: Protocol = services.protocol
    worker = protocol.leasing.register("bench", "host", os.getpid(), "cpu", {}).id
    for study in range(args.studies):
        services.studies.create(spec(f"reaper-{study}", args.completed + args.running))
        fill(protocol, worker, args.completed, args.running)
    counter = SqlCounter(services.db.engine, protocol.context.storage.engine)
    reaping = protocol.reaping

    def before() -> int:
        return reaping.reap()

    def after() -> int:
        tidied = reaping.tidy_optuna()
        return reaping.reap() + tidied.ended + tidied.told

    rounds: dict[str, Callable[[], int]] = {"reap (before)": before, "reap + clean-up": after}
    took: dict[str, list[float]] = {name: [] for name in rounds}
    cpu = dict.fromkeys(rounds, 0.0)
    sql: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):
        for name, call in rounds.items():
            statements, commits = counter.statements, counter.commits
            started, cpu_started = time.perf_counter(), time.process_time()
            if call():
                raise SystemExit(f"{name}: a round found something to do")
            took[name].append(time.perf_counter() - started)
            cpu[name] += time.process_time() - cpu_started
            sql[name] = (counter.statements - statements, counter.commits - commits)
    services.db.dispose()
    base = median(took["reap (before)"])
    return [
        [kind, name, f"{1000 * median(took[name]):.2f}", f"{median(took[name]) / base:.2f}",
         f"{1000 * cpu[name] / args.rounds:.2f}", str(sql[name][0]), str(sql[name][1])]
        for name in rounds
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--running", type=int, default=256, help="running trials a study")
    parser.add_argument("--completed", type=int, default=256, help="completed trials a study")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each kind")
    parser.add_argument("--postgres-url", default=os.environ.get("HPO_TEST_POSTGRES_URL"))
    args = parser.parse_args(argv)
    rows = on_each_database(measure, args)
    print(f"{args.studies} studies, each {args.completed} trials completed and "
          f"{args.running} running; {args.rounds} rounds of each kind, alternating.\n")  # fmt: skip
    header = ["database", "round", "ms (median)", "x reap alone", "CPU ms", "statements",
              "commits"]  # fmt: skip
    print(markdown_table(header, rows, text=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
