"""How much of a worker's time goes into training epochs, with short trials.

Starts a real `hpo server` and two `hpo worker` processes (one torch thread each), runs a study
of short trials (two epochs of about half a second), and reports

    efficiency = sum of the reported epoch_seconds / (workers x wall time)

where the wall time runs from the first trial's start to the last trial's end. Everything else a
worker does (leasing, checkpointing, reporting, building the model, waiting) is overhead.
Target (issue 3): at least 0.90.

    python bench/worker_efficiency.py --trials 24
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import _repo  # noqa: F401  (the repository root on sys.path, for tests.support)
import httpx
from reporting import code_version, machine, markdown_table  # bench/reporting.py

from tests.support.processes import Processes


def study_spec(trials: int, n_samples: int) -> dict:
    return {
        "name": "efficiency",
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": trials, "parallel_trials": 2, "epochs": 2},
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


def measure(url: str, study_id: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as http:
        study = http.get(f"/api/v1/studies/{study_id}").json()
        while http.get(f"/api/v1/studies/{study['id']}").json()["state"] == "running":
            time.sleep(0.5)
        items = http.get(f"/api/v1/studies/{study['id']}/trials", params={"limit": 1000}).json()[
            "items"
        ]
        epoch_seconds = 0.0
        for trial in items:
            curve = http.get(f"/api/v1/trials/{trial['id']}").json()["curve"]
            epoch_seconds += sum(p["metrics"]["epoch_seconds"] for p in curve)
    starts = [datetime.fromisoformat(t["started_at"]) for t in items]
    ends = [datetime.fromisoformat(t["finished_at"]) for t in items]
    wall = (max(ends) - min(starts)).total_seconds()
    return {
        "trials": len(items),
        "wall": wall,
        "epoch_seconds": epoch_seconds,
        "mean_epoch": epoch_seconds / (2 * len(items)),
        "efficiency": epoch_seconds / (2 * wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument(
        "--n-samples",
        type=int,
        default=40000,
        help="synthetic samples: sets the epoch length (about 0.5 s)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        url = processes.server()
        # The study exists before the workers start, so both lease at once: a worker's idle
        # polling before any work exists is not overhead of training.
        spec = study_spec(args.trials, args.n_samples)
        study_id = httpx.post(f"{url}/api/v1/studies", json=spec, timeout=60).json()["id"]
        for i in range(2):
            processes.worker(f"worker{i}", url)
        result = measure(url, study_id)
    print(f"Machine: {machine('torch').line()}; code: {code_version('service', 'trainer')}.\n")
    header = ("trials", "mean epoch (s)", "wall (s)", "sum of epoch_seconds", "efficiency")
    row = (
        f"{result['trials']:.0f}",
        f"{result['mean_epoch']:.2f}",
        f"{result['wall']:.1f}",
        f"{result['epoch_seconds']:.1f}",
        f"{result['efficiency']:.3f}",
    )
    print(markdown_table(header, [row], text=0))


if __name__ == "__main__":
    main()
