"""End to end: ONE real `hpo worker --devices cpu --slots 2` command against a real
`hpo server`: two slots, each a worker of its own, train two trials at the same time, and one
SIGTERM to the command releases both trials; so does a command killed without a word."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Processes, spec_doc, wait_for
from tests.support import api
from tests.support.processes import hpo_command

pytestmark = pytest.mark.e2e

# About half a second per epoch on one CPU thread: long enough to be caught mid-trial.
SLOW = {"model": "mlp", "dataset": "synthetic", "n_samples": 60000, "width": 256}


def _slots(url: str) -> list[dict[str, Any]]:
    """The slots in the workers list (the tests run one worker command), by slot."""
    host = socket.gethostname()
    return sorted(
        (w for w in api.get(url, "/api/v1/workers") if w["name"].startswith(f"{host}:")),
        key=lambda w: w["slot"],
    )


def test_one_worker_command_trains_in_two_slots_and_sigterm_releases_both(
    processes: Processes,
) -> None:
    url = processes.server()
    both = {"max_trials": 2, "parallel_trials": 2}
    # The study is there before the worker starts: both slots lease as soon as they are up.
    doc = spec_doc("slots", budget={**both, "epochs": 4}, workload=SLOW)
    first = api.create_study(url, doc)["id"]
    worker = processes.start("slots", "worker", "--server", url, "--devices", "cpu", "--slots", "2")

    # Two slots, each its own worker: <host>:<its pid>/cpu#<slot>, children of the command.
    slots = wait_for(lambda: len(found := _slots(url)) == 2 and found, 90, "two slots registered")
    pids = [int(w["name"].split(":", 1)[1].split("/")[0]) for w in slots]
    assert worker.pid not in pids and len(set(pids)) == 2
    host = socket.gethostname()
    assert [w["name"] for w in slots] == [f"{host}:{pids[0]}/cpu#0", f"{host}:{pids[1]}/cpu#1"]
    assert [(w["slot"], w["slots"], w["device"], w["state"]) for w in slots] == [
        (0, 2, "cpu", "active"),
        (1, 2, "cpu", "active"),
    ]
    log = processes.log("slots")
    assert "starting 2 slots (cpu#0, cpu#1), 1 torch thread each" in log, log

    # Both trials ran at the same time, one in each slot.
    done = wait_for(
        lambda: api.get(url, f"/api/v1/studies/{first}")["state"] == "completed", 120, "study 1"
    )
    assert done
    trials = api.study_trials(url, first)
    assert {t["worker"] for t in trials} == {w["name"] for w in slots}
    (start_a, end_a), (start_b, end_b) = [
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
        for t in trials
    ]
    assert start_a < end_b and start_b < end_a, trials  # the running intervals overlap

    # One SIGTERM to the command: each slot ends its epoch, gives its trial back, and leaves.
    second = api.create_study(
        url, spec_doc("slots-term", budget={**both, "epochs": 20}, workload=SLOW)
    )["id"]

    def both_mid_trial() -> list[dict[str, Any]] | None:
        running = [
            t for t in api.study_trials(url, second) if t["state"] == "running" and t["epochs"]
        ]
        return running if len(running) == 2 else None

    running = wait_for(both_mid_trial, 120, "both trials past their first epoch", every=0.1)
    assert {t["worker"] for t in running} == {w["name"] for w in slots}
    worker.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert worker.wait(30) == 0, processes.log("slots")
    assert time.monotonic() - stopped_at < 15  # an epoch, a checkpoint and a release each
    for trial in running:
        released = api.get(url, f"/api/v1/trials/{trial['id']}")
        assert released["state"] == "queued" and released["attempt"] == 1, released
        assert 1 <= released["epochs"] < 20  # its epochs and checkpoint are kept for the next
    log = processes.log("slots")
    assert log.count("released unfinished (worker shutting down)") == 2, log
    assert [w["state"] for w in _slots(url)] == ["gone", "gone"]


def test_slots_of_a_killed_worker_command_release_their_trials(processes: Processes) -> None:
    # Leases far longer than the test: only a release can queue the trials again in time.
    url = processes.server(HPO_LEASE_SECONDS="300")
    doc = spec_doc("orphans", budget={"max_trials": 2, "parallel_trials": 2, "epochs": 20})
    study = api.create_study(url, {**doc, "workload": SLOW})["id"]
    worker = processes.start("slots", "worker", "--server", url, "--devices", "cpu", "--slots", "2")

    def both_mid_trial() -> list[dict[str, Any]] | None:
        running = [
            t for t in api.study_trials(url, study) if t["state"] == "running" and t["epochs"]
        ]
        return running if len(running) == 2 else None

    wait_for(both_mid_trial, 120, "both trials past their first epoch", every=0.1)
    worker.kill()  # no forwarding: the kernel tells the slots (Linux's parent-death signal)
    worker.wait()

    def released() -> list[dict[str, Any]] | None:
        trials = api.study_trials(url, study)
        return trials if all(t["state"] == "queued" for t in trials) else None

    trials = wait_for(released, 30, "both trials queued again")
    assert [t["attempt"] for t in trials] == [1, 1]  # handed back, not reaped

    def gone() -> list[str] | None:
        states = [w["state"] for w in _slots(url)]
        return states if states == ["gone", "gone"] else None

    assert wait_for(gone, 10, "both slots deregistered")
    log = processes.log("slots")
    assert log.count("the hpo worker command is gone") == 2, log
    assert log.count("released unfinished (worker shutting down)") == 2, log


def test_ctrl_c_while_the_slots_start_stops_them_without_a_traceback(
    processes: Processes,
) -> None:
    """Ctrl-C in a terminal signals the command's whole process group, slots still importing
    PyTorch included: they leave quietly (the command tells them), and so does the command."""
    url = processes.server()
    log_path = processes.folder / "terminal.log"
    with open(log_path, "wb") as log:
        command = subprocess.Popen(
            hpo_command("worker", "--server", url, "--devices", "cpu", "--slots", "2"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=processes.env,
            process_group=0,  # its own group, as a terminal's foreground job has
        )
    processes.procs.append(command)
    children = Path(f"/proc/{command.pid}/task/{command.pid}/children")
    # the resource tracker and the two slots, then half a second into the slots' imports
    # (PyTorch's alone takes seconds)
    wait_for(lambda: len(children.read_text().split()) >= 3, 60, "the slots started", 0.02)
    time.sleep(0.5)
    os.killpg(command.pid, signal.SIGINT)  # the terminal's Ctrl-C

    assert command.wait(60) == 0
    output = log_path.read_text()
    assert "signal 2: stopping the slots" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert all(w["state"] == "gone" for w in _slots(url))  # any slot that registered left
