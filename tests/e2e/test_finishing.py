"""End to end: a worker that leases its next trial while the last epoch trains and completes
trials in the background (trainer.finishing) still loses nothing when it is stopped or killed:
real `hpo server` and `hpo worker` processes."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.conftest import Processes, spec_doc, wait_for
from tests.support import api

pytestmark = pytest.mark.e2e

# About a quarter of a second per epoch on one CPU thread, and half a second.
SHORT = {"model": "mlp", "dataset": "synthetic", "n_samples": 30000, "width": 256}
LONGER = {**SHORT, "n_samples": 60000}


def _holding_two(url: str) -> dict[str, Any] | None:
    """A worker holding two trials: one training its last epoch, one leased ahead."""
    for worker in api.get(url, "/api/v1/workers"):
        if len(worker["trials"]) >= 2:
            return dict(worker)
    return None


def test_sigterm_mid_study_gives_back_every_trial_held_and_the_study_completes(
    processes: Processes,
) -> None:
    url = processes.server()
    doc = spec_doc(
        "leaving",
        budget={"max_trials": 10, "parallel_trials": 8, "epochs": 2},
        workload=SHORT,
    )
    study_id = api.create_study(url, doc)["id"]
    worker = processes.worker("leaving", url, "--fuse", "1", "--slots", "1")
    wait_for(
        lambda: sum(t["state"] == "completed" for t in api.study_trials(url, study_id)) >= 1,
        120,
        "a first completed trial",
    )
    holder = wait_for(lambda: _holding_two(url), 60, "a trial leased ahead", every=0.05)
    held = {t["trial_id"] for t in holder["trials"]}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    # Nothing is left leased to the worker that left: each trial it held is queued again
    # (released at its epoch, or never started) or, if its last epoch ended before the signal
    # came (a race a loaded machine wins: an epoch is a quarter of a second), completed; the
    # later of the two cannot have trained its two epochs, so one at least is queued.
    trials = api.study_trials(url, study_id)
    states = [t["state"] for t in trials]
    assert "running" not in states, states
    held_states = [t["state"] for t in trials if t["id"] in held]
    assert len(held_states) == 2 and set(held_states) <= {"queued", "completed"}, held_states
    assert "queued" in held_states, held_states
    assert all(not w["trials"] for w in api.get(url, "/api/v1/workers"))
    log = processes.log("leaving")
    assert "released unfinished (worker shutting down)" in log
    assert log.count("completed in") == states.count("completed")

    processes.worker("next", url, "--fuse", "1")
    study = api.finished(url, study_id, timeout=180)
    assert study["state"] == "completed" and study["counts"]["completed"] == 10
    assert study["counts"]["failed"] == 0


def test_a_worker_killed_right_after_training_loses_nothing_but_a_re_lease(
    processes: Processes,
) -> None:
    """SIGKILL while a trained trial's completion is still with the background sender and
    the next trial (leased ahead) has started: the server, frozen meanwhile so that the
    completion cannot have been answered, reaps both leases and the trials are trained again
    or completed; the study ends with every trial completed once."""
    url = processes.server(HPO_LEASE_SECONDS="3")
    server = processes.process("server")
    doc = spec_doc(
        "killed",
        budget={"max_trials": 3, "parallel_trials": 4, "epochs": 2},
        # Its last epoch (half a second) is the time between seeing the lease ahead and
        # freezing the server: the first trial's completion cannot slip in between.
        workload=LONGER,
    )
    doc["keep_models"] = 0  # the last report rides with the completion: training ends alone
    study_id = api.create_study(url, doc)["id"]
    worker = processes.worker("doomed", url, "--fuse", "1", "--slots", "1")
    holder = wait_for(lambda: _holding_two(url), 120, "a trial leased ahead", every=0.05)
    training, ahead = sorted(t["trial_id"] for t in holder["trials"])
    numbers = {t["id"]: t["number"] for t in api.study_trials(url, study_id)}
    os.kill(server.pid, signal.SIGSTOP)
    try:
        # The next trial starts once the first has trained: its completion is then on its
        # way to a server that cannot answer.
        wait_for(
            lambda: f"trial #{numbers[ahead]} of 'killed' started" in processes.log("doomed"),
            60,
            "the trial leased ahead to start",
            every=0.02,
        )
        worker.kill()
        worker.wait(10)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    # Its completion never got its answer (the line is written when it does).
    assert f"trial #{numbers[training]} of 'killed' completed" not in processes.log("doomed")

    processes.worker("next", url, "--fuse", "1")
    study = api.finished(url, study_id, timeout=180)
    assert study["state"] == "completed" and study["counts"]["completed"] == 3
    assert study["counts"]["failed"] == 0
    trials = {t["id"]: t for t in api.study_trials(url, study_id)}
    assert len(trials) == 3
    # The trial leased ahead was reaped and trained again: one more attempt, nothing else.
    assert trials[ahead]["attempt"] == 2
    assert trials[training]["attempt"] in (1, 2)  # its completion may have reached the server
    for trial in trials.values():
        curve = api.get(url, f"/api/v1/trials/{trial['id']}")["curve"]
        assert [p["epoch"] for p in curve] == [1, 2]
