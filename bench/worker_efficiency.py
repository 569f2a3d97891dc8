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
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from service.demo import free_port


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT
    )


def wait_healthy(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


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
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "HPO_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "HPO_ARTIFACTS_DIR": f"{tmp}/artifacts",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        procs = [start(["server", "--port", str(port)], env, Path(tmp) / "server.log")]
        try:
            wait_healthy(url)
            # The study exists before the workers start, so both lease at once: a worker's
            # idle polling before any work exists is not overhead of training.
            spec = study_spec(args.trials, args.n_samples)
            study_id = httpx.post(f"{url}/api/v1/studies", json=spec, timeout=60).json()["id"]
            for i in range(2):
                procs.append(
                    start(
                        ["worker", "--server", url, "--devices", "cpu", "--threads", "1"],
                        env,
                        Path(tmp) / f"worker{i}.log",
                    )
                )
            result = measure(url, study_id)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(30)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| trials | mean epoch (s) | wall (s) | sum of epoch_seconds | efficiency |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {result['trials']:.0f} | {result['mean_epoch']:.2f} | {result['wall']:.1f} | "
        f"{result['epoch_seconds']:.1f} | {result['efficiency']:.3f} |"
    )


if __name__ == "__main__":
    main()
