"""End to end: real `hpo server` and `hpo worker` processes train real trials over HTTP."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest

from hpo.protocol import Assignment, Completion
from tests.conftest import Processes, spec_doc, wait_for
from tests.support import api
from trainer.client import WorkerClient
from trainer.worker import DeviceWorker

pytestmark = pytest.mark.e2e

# About half a second per epoch on one CPU thread: long enough to be caught mid-trial.
SLOW = {"model": "mlp", "dataset": "synthetic", "n_samples": 60000, "width": 256}


def _running_mid_trial(url: str, study_id: int, min_epoch: int) -> dict[str, Any]:
    def mid() -> dict[str, Any] | None:
        for trial in api.study_trials(url, study_id):
            if trial["state"] == "running" and trial["epochs"] >= min_epoch:
                return trial
        return None

    trial: dict[str, Any] = wait_for(mid, 90, f"a trial past epoch {min_epoch}", every=0.1)
    return trial


def test_tpe_study_on_digits_with_two_workers(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w1", url)
    processes.worker("w2", url)
    doc = spec_doc(
        "digits-tpe",
        strategy={"kind": "tpe", "seed": 0},
        budget={"max_trials": 8, "parallel_trials": 2, "epochs": 3},
        workload={"model": "mlp", "dataset": "digits"},
    )
    study = api.finished(url, api.create_study(url, doc)["id"], timeout=240)
    assert study["state"] == "completed"
    assert study["counts"]["completed"] == 8
    trials = api.study_trials(url, study["id"])
    assert len(trials) == 8
    workers = {t["worker"] for t in trials}
    assert len(workers) == 2, workers  # both workers trained
    best = max(trials, key=lambda t: t["value"])
    assert study["best"]["trial_id"] == best["id"]
    assert study["best"]["value"] == best["value"]
    for trial in trials:
        curve = api.get(url, f"/api/v1/trials/{trial['id']}")["curve"]
        assert [p["epoch"] for p in curve] == [1, 2, 3]
        assert {"val_accuracy", "val_loss", "train_loss", "lr", "epoch_seconds"} <= set(
            curve[0]["metrics"]
        )
        assert curve[-1]["metrics"]["val_accuracy"] == trial["value"]
    log = processes.log("w1") + processes.log("w2")
    assert log.count("completed in") == 8


def test_worker_killed_at_epoch_5_of_8_resumes_on_the_other_worker(processes: Processes) -> None:
    url = processes.server(HPO_LEASE_SECONDS="3")
    # A checkpoint after every epoch (checkpoint_seconds 0), so a kill loses at most one.
    workload = {**SLOW, "checkpoint_seconds": 0}
    doc = spec_doc(
        "kill", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 8}, workload=workload
    )
    study_id = api.create_study(url, doc)["id"]
    doomed = processes.worker("doomed", url)
    victim = _running_mid_trial(url, study_id, min_epoch=5)
    processes.worker("rescuer", url)  # idle: the study runs one trial at a time
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    reported_before_kill = api.get(url, f"/api/v1/trials/{victim['id']}")["epochs"]
    study = api.finished(url, study_id, timeout=180)
    assert study["state"] == "completed" and study["counts"]["completed"] == 1
    finished = api.get(url, f"/api/v1/trials/{victim['id']}")
    assert finished["attempt"] == 2
    assert finished["worker"] != victim["worker"]
    assert [p["epoch"] for p in finished["curve"]] == list(range(1, 9))
    resumed_after = int(processes.log("rescuer").split("resuming after epoch ")[1].split(")")[0])
    assert resumed_after >= reported_before_kill - 1  # retrained at most one epoch


def test_successive_halving_with_two_workers(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w1", url)
    processes.worker("w2", url)
    doc = spec_doc(
        "sh",
        strategy={
            "kind": "successive_halving",
            "n_configs": 9,
            "min_epochs": 1,
            "reduction_factor": 3,
            "seed": 0,
        },
        budget={"epochs": 9, "parallel_trials": 2},
    )
    study = api.finished(url, api.create_study(url, doc)["id"], timeout=240)
    assert study["state"] == "completed"
    assert study["counts"]["completed"] == 1 and study["counts"]["pruned"] == 8
    trials = api.study_trials(url, study["id"])
    assert sorted(t["epochs"] for t in trials) == [1] * 6 + [3] * 2 + [9]
    assert sum(t["epochs"] for t in trials) == 9 * 1 + 3 * 2 + 1 * 6  # no epoch trained twice
    log = processes.log("w1") + processes.log("w2")
    assert log.count("resuming after epoch 1") == 3 and log.count("resuming after epoch 3") == 1
    promoted = [t for t in trials if t["epochs"] >= 3]
    rung0 = sorted(
        trials,
        key=lambda t: api.get(url, f"/api/v1/trials/{t['id']}")["curve"][0]["metrics"][
            "val_accuracy"
        ],
        reverse=True,
    )
    assert {t["id"] for t in promoted} == {t["id"] for t in rung0[:3]}


def test_hyperband_with_two_workers(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w1", url)
    processes.worker("w2", url)
    strategy = {"kind": "hyperband", "min_epochs": 1, "reduction_factor": 2, "seed": 0}
    doc = spec_doc("hb", strategy=strategy, budget={"epochs": 4, "parallel_trials": 2})
    study = api.finished(url, api.create_study(url, doc)["id"], timeout=300)
    # Brackets for min 1, eta 2, 4 epochs, numbered in this order: 4 configs at 1 epoch, 2
    # promoted to 2, 1 to 4; 3 configs at 2 epochs, 1 promoted to 4; 3 configs at 4 epochs.
    assert study["state"] == "completed"
    assert study["counts"]["completed"] == 5 and study["counts"]["pruned"] == 5
    trials = sorted(api.study_trials(url, study["id"]), key=lambda t: t["number"])
    brackets = [trials[0:4], trials[4:7], trials[7:10]]
    assert [sorted(t["epochs"] for t in b) for b in brackets] == [[1, 1, 2, 4], [2, 2, 4], [4] * 3]
    assert {t["state"] for t in trials if t["epochs"] < 4} == {"pruned"}
    assert {t["state"] for t in trials if t["epochs"] == 4} == {"completed"}
    # Each promotion took the best of its rung and resumed it from its checkpoint.
    curves = {t["id"]: api.get(url, f"/api/v1/trials/{t['id']}")["curve"] for t in trials}

    def best(bracket: list[dict[str, Any]], epoch: int, keep: int) -> set[int]:
        ranked = sorted(
            (t for t in bracket if t["epochs"] >= epoch),
            key=lambda t: curves[t["id"]][epoch - 1]["metrics"]["val_accuracy"],
            reverse=True,
        )
        return {t["id"] for t in ranked[:keep]}

    first, second, _ = brackets
    assert {t["id"] for t in first if t["epochs"] >= 2} == best(first, 1, 2)
    assert {t["id"] for t in first if t["epochs"] == 4} == best(first, 2, 1)
    assert {t["id"] for t in second if t["epochs"] == 4} == best(second, 2, 1)
    for trial in trials:
        assert [p["epoch"] for p in curves[trial["id"]]] == list(range(1, trial["epochs"] + 1))
    log = processes.log("w1") + processes.log("w2")
    assert log.count("(resuming after epoch 1)") == 2 and log.count("(resuming after epoch 2)") == 2
    assert log.count(" started on ") == 10 + 4  # every config once, every promotion once


def test_sigterm_hands_the_trial_back_and_the_next_worker_resumes_it_from_the_checkpoint(
    processes: Processes,
) -> None:
    url = processes.server()
    doc = spec_doc(
        "term", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 6}, workload=SLOW
    )
    study_id = api.create_study(url, doc)["id"]
    worker = processes.worker("leaving", url)
    trial = _running_mid_trial(url, study_id, min_epoch=1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    released = api.get(url, f"/api/v1/trials/{trial['id']}")
    assert released["state"] == "queued" and released["attempt"] == 1
    assert "released unfinished" in processes.log("leaving")
    done = released["epochs"]  # the leaving worker checkpointed and reported these
    assert 1 <= done < 6 and [p["epoch"] for p in released["curve"]] == list(range(1, done + 1))

    processes.worker("next", url)
    study = api.finished(url, study_id, timeout=120)
    assert study["counts"]["completed"] == 1
    # No epoch trained twice: the next worker started after the released epochs, from the
    # checkpoint (a restart at epoch 0 logs no resumption, or another epoch).
    started = [line for line in processes.log("next").splitlines() if " started on " in line]
    assert len(started) == 1, started
    assert f" started on cpu (resuming after epoch {done}): " in started[0], started
    curve = api.get(url, f"/api/v1/trials/{trial['id']}")["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4, 5, 6]
    assert curve[:done] == released["curve"]  # the first worker's epochs, kept as they were
    # The resumed epochs continue the curve: every learning metric is what one uninterrupted
    # run of the same trial gives (training on the CPU is deterministic), to the last bit.
    whole = _uninterrupted(SLOW, api.get(url, f"/api/v1/trials/{trial['id']}")["params"], 6)
    for point, expected in zip(curve, whole, strict=True):
        assert {k: point["metrics"][k] for k in LEARNING} == expected, point


LEARNING = ("train_loss", "val_loss", "val_accuracy", "lr")  # the metrics that are not timings


def _uninterrupted(workload: dict[str, Any], params: dict[str, Any], epochs: int) -> list[Any]:
    """The learning metrics of each epoch of one run on the CPU with one thread, as
    `hpo worker --threads 1` trains it."""
    import torch

    from hpo.protocol import Decision
    from trainer.train import TrainConfig, train

    curve: list[dict[str, float]] = []

    def report(_epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append({k: metrics[k] for k in LEARNING})
        return Decision.CONTINUE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig.from_assignment(workload, params, epochs, "cpu"), report)
    finally:
        torch.set_num_threads(threads)
    return curve


def test_nan_loss_fails_the_trial_and_the_worker_goes_on(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w", url)
    doc = spec_doc(
        "nan",
        strategy={"kind": "grid"},
        budget={"parallel_trials": 1, "epochs": 3},
        space={"lr": {"type": "float", "values": [1.0e6, 0.01]}},
        workload={"model": "mlp", "dataset": "synthetic", "optimizer": "sgd"},
    )
    study = api.finished(url, api.create_study(url, doc)["id"], timeout=120)
    by_lr = {t["params"]["lr"]: t for t in api.study_trials(url, study["id"])}
    assert by_lr[1.0e6]["state"] == "failed"
    assert "nan" in by_lr[1.0e6]["reason"].lower() or "inf" in by_lr[1.0e6]["reason"].lower()
    assert by_lr[0.01]["state"] == "completed"
    assert study["state"] == "completed"


def test_worker_recycles_its_process_and_the_study_goes_on(processes: Processes) -> None:
    url = processes.server()
    worker = processes.worker("recycling", url, "--max-trials-per-process", "2")
    doc = spec_doc("recycle", budget={"max_trials": 5, "parallel_trials": 1, "epochs": 2})
    study = api.finished(url, api.create_study(url, doc)["id"], timeout=240)
    assert study["state"] == "completed" and study["counts"]["completed"] == 5
    assert processes.log("recycling").count("starting a fresh one") >= 2
    registrations = [w for w in api.get(url, "/api/v1/workers") if f":{worker.pid}/" in w["name"]]
    assert len(registrations) >= 3  # the same pid, a fresh process each time
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_a_trial_leased_with_a_completion_is_given_back_when_the_worker_stops(
    processes: Processes,
) -> None:
    # A busy worker leases its next trial in the completion's request; if it is told to stop
    # just then, that trial must not sit leased to a leaving worker until its lease expires.
    url = processes.server()
    doc = spec_doc("handover", budget={"max_trials": 2, "parallel_trials": 1, "epochs": 1})
    study_id = api.create_study(url, doc)["id"]
    client = WorkerClient(url)
    worker = DeviceWorker(client, "cpu", poll_seconds=0.2)
    complete = client.complete
    handed: list[Assignment] = []

    def complete_then_stop(*args: Any, **kwargs: Any) -> Completion:
        reply = complete(*args, **kwargs)
        handed.extend(reply.assignments)
        worker.shutdown.set()  # as a SIGTERM arriving with the reply would
        return reply

    client.complete = complete_then_stop  # type: ignore[method-assign]
    try:
        worker.run()
    finally:
        client.close()
    [upcoming] = handed  # the worker did ask for its next trial with the completion
    given_back = api.get(url, f"/api/v1/trials/{upcoming.trial_id}")
    assert given_back["state"] == "queued" and given_back["attempt"] == 1
    processes.worker("next", url)
    study = api.finished(url, study_id, timeout=120)
    assert study["state"] == "completed" and study["counts"]["completed"] == 2


# `hpo worker` as installed, except that it finds two devices on the CPU: a GPU box's one
# process per device, on a machine without GPUs.
TWO_CPU_DEVICES = (
    "import sys, trainer.processes as p; p.resolve_devices = lambda devices: ['cpu', 'cpu']; "
    "from service.cli import main; sys.exit(main())"
)


def test_a_device_process_killed_by_a_signal_fails_the_worker(processes: Processes) -> None:
    url = processes.server()
    argv = [sys.executable, "-c", TWO_CPU_DEVICES, "worker", "--server", url, "--threads", "1"]
    worker = processes.spawn("worker", argv, processes.env)

    def device_pids() -> list[int]:
        # A device process registers as <host>:<pid>/<device>.
        active = [w for w in api.get(url, "/api/v1/workers") if w["state"] == "active"]
        return [int(w["name"].rsplit(":", 1)[1].split("/")[0]) for w in active]

    doomed, survivor = wait_for(lambda: len(pids := device_pids()) == 2 and pids, 90, "2 devices")
    assert worker.pid not in (doomed, survivor)  # both are children of `hpo worker`
    os.kill(doomed, signal.SIGKILL)  # as the kernel's OOM killer would
    worker.send_signal(signal.SIGTERM)  # the other one stops cleanly
    assert worker.wait(60) == 128 + signal.SIGKILL, processes.log("worker")
    assert f":{survivor}/cpu stopped" in processes.log("worker")
