"""How much of a worker's time goes into training epochs, with short trials.

Starts a real `hpo server` and the workers of a case, runs a study of short trials (two epochs
of about half a second), and reports

    efficiency = sum of the reported epoch_seconds / (workers x wall time)

where the wall time runs from the first trial's start to the last trial's end and the workers
are those the server lists (each slot of a command is one). Everything else a worker does
(leasing, checkpointing, reporting, building the model, waiting) is overhead. The cases:

- two-workers: two `hpo worker --devices cpu --threads 1` commands (the baseline of issue 3,
  target at least 0.90);
- one-command: ONE `hpo worker --devices cpu` command with its default slots, one per physical
  core with one torch thread each (issue 14, target at least 0.95).

    python bench/worker_efficiency.py --trials 24 [--cases two-workers,one-command] [--runs 3]
        [--parallel-trials 5,2]

`--checkpoint-seconds 0,default` runs each case once per value, in turn: 0 checkpoints every
epoch but the last (the cadence before the time cadence), `default` leaves the workload at the
tunable's default (10 s: these trials take none).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import httpx
from reporting import code_version, machine, markdown_table  # bench/reporting.py

from tests.support.processes import Processes

CASES = ("two-workers", "one-command")


def study_spec(
    trials: int, n_samples: int, checkpoint_seconds: float | None = None, parallel: int = 5
) -> dict:
    spec: dict[str, Any] = {
        "name": "efficiency",
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": trials, "parallel_trials": parallel, "epochs": 2},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        },
        "workload": {
            "model": "mlp",
            "dataset": "synthetic",
            "n_samples": n_samples,
            "width": 256,
            "norm": "batch",
        },
    }
    if checkpoint_seconds is not None:
        spec["workload"]["checkpoint_seconds"] = checkpoint_seconds
    return spec


def start_workers(processes: Processes, url: str, case: str) -> None:
    # `--fuse 1`: each slot trains one trial at a time, so the epochs' seconds add up to the
    # slots' busy time (a fused group's members each report the group's epoch time; `--fuse
    # auto` is 8 on a CPU since 5b0e561). Fused training is measured by fused_throughput.py.
    if case == "two-workers":
        for i in range(2):
            processes.worker(f"worker{i}", url, "--fuse", "1")  # --devices cpu --threads 1
    else:
        processes.start("slots", "worker", "--server", url, "--devices", "cpu", "--fuse", "1")


def measure(url: str, study_id: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as http:
        study = http.get(f"/api/v1/studies/{study_id}").json()
        while http.get(f"/api/v1/studies/{study['id']}").json()["state"] == "running":
            time.sleep(0.5)
        items = http.get(f"/api/v1/studies/{study['id']}/trials", params={"limit": 1000}).json()[
            "items"
        ]
        trained: dict[int, float] = {}  # trial id: its epochs' seconds
        for trial in items:
            curve = http.get(f"/api/v1/trials/{trial['id']}").json()["curve"]
            trained[trial["id"]] = sum(p["metrics"]["epoch_seconds"] for p in curve)
        workers = len(http.get("/api/v1/workers").json())
    epoch_seconds = sum(trained.values())
    spans = {
        t["id"]: (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
        for t in items
    }
    first = min(start for start, _ in spans.values())
    last = max(end for _, end in spans.values())
    wall = (last - first).total_seconds()
    # Where the rest of the workers' time went: inside trials but outside their epochs (the
    # model's build, the last report, the completion), between one worker's trials, and idle at
    # the ends (a worker that starts later than the first or runs out of trials earlier). A
    # trial leased ahead starts (is leased) while its worker's previous trial trains its last
    # epoch, and a completion sent in the background ends it after the next one started: then
    # a worker's trials overlap, "between" is negative and "inside" counts that overlap too.
    inside = sum((end - start).total_seconds() - trained[i] for i, (start, end) in spans.items())
    by_worker: dict[str, list[tuple[datetime, datetime]]] = {}
    for t in items:
        by_worker.setdefault(t["worker"], []).append(spans[t["id"]])
    between = ends = spans_total = 0.0
    for own in by_worker.values():
        own.sort()
        between += sum((b[0] - a[1]).total_seconds() for a, b in pairwise(own))
        ends += (own[0][0] - first).total_seconds() + (last - own[-1][1]).total_seconds()
        spans_total += (max(end for _, end in own) - own[0][0]).total_seconds()
    # Whatever overlaps: each worker's time from its first trial's start to its last one's end
    # that is not inside an epoch, per trial (inside + between when trials do not overlap).
    outside = spans_total - epoch_seconds
    return {
        "workers": workers,
        "trials": len(items),
        "wall": wall,
        "epoch_seconds": epoch_seconds,
        "mean_epoch": epoch_seconds / (2 * len(items)),  # two epochs a trial
        "efficiency": epoch_seconds / (workers * wall),
        "inside_ms": 1000 * inside / len(items),
        "between_ms": 1000 * between / max(1, len(items) - len(by_worker)),
        "outside_ms": 1000 * outside / len(items),
        "ends": ends,
    }


def run_case(
    case: str,
    trials: int,
    n_samples: int,
    checkpoint_seconds: float | None = None,
    parallel: int = 5,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        url = processes.server()
        # The study exists before the workers start, so they lease at once: a worker's idle
        # polling before any work exists is not overhead of training.
        spec = study_spec(trials, n_samples, checkpoint_seconds, parallel)
        study_id = httpx.post(f"{url}/api/v1/studies", json=spec, timeout=60).json()["id"]
        start_workers(processes, url, case)
        return measure(url, study_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument(
        "--n-samples",
        type=int,
        default=40000,
        help="synthetic samples: sets the epoch length (about 0.5 s)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated, run in turn: {', '.join(CASES)}",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each case, interleaved")
    parser.add_argument(
        "--parallel-trials",
        default="5",
        help="comma-separated values of the study's parallel_trials, each case run with each "
        "in turn. 5 (the default) lets each of two workers hold the trial it trains and the "
        "one it leases ahead (a lease ahead never takes a study's last slot); with 2 every "
        "lease ahead is refused and the completion leases the next trial, as before",
    )
    parser.add_argument(
        "--checkpoint-seconds",
        default="default",
        help="comma-separated workload values, each case run with each in turn; "
        "`default`: not set (the tunable's default)",
    )
    args = parser.parse_args()
    cadences = [
        None if value.strip() == "default" else float(value)
        for value in args.checkpoint_seconds.split(",")
    ]
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    if unknown := set(cases) - set(CASES):
        parser.error(f"--cases: unknown {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    parallels = [int(value) for value in args.parallel_trials.split(",")]
    rows = []
    for _ in range(args.runs):
        for case in cases:
            for cadence in cadences:
                for parallel in parallels:
                    result = run_case(case, args.trials, args.n_samples, cadence, parallel)
                    rows.append(_row(case, cadence, parallel, result))
    print(f"Machine: {machine('torch').line()}; code: {code_version('service', 'trainer')}.\n")
    header = (
        "case",
        "checkpoint_seconds",
        "parallel_trials",
        "workers",
        "trials",
        "mean epoch (s)",
        "wall (s)",
        "sum of epoch_seconds",
        "efficiency",
        "in a trial, not training (ms/trial)",
        "between trials (ms)",
        "a worker's span outside epochs (ms/trial)",
        "idle at the ends (s)",
    )
    print(markdown_table(header, rows))


def _row(
    case: str, cadence: float | None, parallel: int, result: dict[str, float]
) -> tuple[str, ...]:
    return (
        case,
        "default" if cadence is None else f"{cadence:g}",
        str(parallel),
        f"{result['workers']:.0f}",
        f"{result['trials']:.0f}",
        f"{result['mean_epoch']:.2f}",
        f"{result['wall']:.1f}",
        f"{result['epoch_seconds']:.1f}",
        f"{result['efficiency']:.3f}",
        f"{result['inside_ms']:.0f}",
        f"{result['between_ms']:.0f}",
        f"{result['outside_ms']:.0f}",
        f"{result['ends']:.2f}",
    )


if __name__ == "__main__":
    main()
