"""The server killed (SIGKILL) mid-study and started again: workers and `hpo submit --wait`
reconnect on their own and the study completes with nothing lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Processes, free_port, postgres_database, spec_doc
from tests.reliability.conftest import completed_once_each, wait_mid_way

EPOCHS = 4
TRIALS = 4
WORKERS = 2
# About half a second per epoch on one CPU thread: a trial is mid-way when the server dies.
WORKLOAD = {"model": "mlp", "dataset": "synthetic", "n_samples": 60000, "width": 256}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "outage"), [("sqlite", 0.0), ("postgres", 20.0)], ids=["sqlite-0s", "postgres-20s"]
)
def test_server_killed_mid_study_and_restarted_loses_nothing(
    processes: Processes, tmp_path: Path, backend: str, outage: float
) -> None:
    if backend == "postgres":
        with postgres_database() as url:
            _kill_and_restart(processes, tmp_path, url, outage)
    else:
        _kill_and_restart(processes, tmp_path, f"sqlite:///{tmp_path / 'hpo.db'}", outage)


def _kill_and_restart(processes: Processes, tmp_path: Path, database: str, outage: float) -> None:
    port, env = free_port(), {"HPO_DATABASE_URL": database, "HPO_LEASE_SECONDS": "3"}
    url = processes.server(port=port, **env)
    workers = [processes.worker(f"w{i}", url) for i in range(WORKERS)]
    budget = {"max_trials": TRIALS, "parallel_trials": WORKERS, "epochs": EPOCHS}
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(spec_doc("restart", budget=budget, workload=WORKLOAD)))
    submit = processes.start("submit", "submit", str(spec), "--server", url, "--wait")
    with httpx.Client(base_url=url, timeout=30) as http:
        wait_mid_way(http)
    server = processes.process("server")
    server.send_signal(signal.SIGKILL)
    server.wait()
    time.sleep(outage)
    processes.server("server-again", port=port, **env)

    assert submit.wait(240) == 0, processes.log("submit")
    out = processes.log("submit")
    assert f"{TRIALS}/{TRIALS} trials done" in out and "study 'restart' completed" in out
    if outage:
        assert "the server does not answer; waiting for it to come back" in out
    assert all(worker.poll() is None for worker in workers)  # they reconnected on their own
    with httpx.Client(base_url=url, timeout=30) as http:
        rows = completed_once_each(http, 1, TRIALS, EPOCHS)
    # Only the trials that were running when the server died may have been run again.
    assert sum(t["attempt"] - 1 for t in rows) <= WORKERS
    processes.stop_all()  # before a PostgreSQL database goes away under them
    logs = "".join(processes.log(f"w{i}") for i in range(WORKERS))
    assert logs.count("completed in") == TRIALS
    assert "Traceback" not in processes.log("server-again")
