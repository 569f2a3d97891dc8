"""End to end: `hpo worker --fuse 4` trains a study's trials in fused groups, and they complete
with the values `--fuse 1` gives them."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import Processes, wait_for

pytestmark = pytest.mark.e2e


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "strategy": {"kind": "random", "seed": 0},
        "budget": {"max_trials": 8, "parallel_trials": 8, "epochs": 3},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "dropout": {"type": "float", "low": 0.05, "high": 0.4},
            "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        },
        "workload": {"model": "mlp", "dataset": "digits", "norm": "batch", "batch_size": 64},
    }


def run(processes: Processes, url: str, fuse: str) -> tuple[dict[int, dict], list[dict]]:
    """The study's trials by number once a `--fuse fuse` worker finished it, and what
    GET /api/v1/workers said while it trained."""
    http = httpx.Client(base_url=url, timeout=30)
    doc = spec(f"fuse-{fuse}")
    # Room for the group training and the next one leased ahead: a lease ahead never takes a
    # study's last parallel slot (it stays for an idle worker), so with 8 the second group
    # would be 3 trials and the last one alone.
    doc["budget"]["parallel_trials"] = 9
    study = http.post("/api/v1/studies", json=doc)
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    worker = processes.worker(f"fuse{fuse}", url, "--fuse", fuse)
    seen: list[dict] = []

    def finished() -> bool:
        seen.extend(w for w in http.get("/api/v1/workers").json() if w["trials"])
        return http.get(f"/api/v1/studies/{study_id}").json()["state"] != "running"

    # Sampled often: a group of 4 alone (before the next is leased ahead in its last epoch)
    # trains for a few tenths of a second, which samples every 0.2 s missed under CI's load.
    wait_for(finished, 240, f"the --fuse {fuse} study to finish", every=0.02)
    worker.terminate()
    assert worker.wait(30) == 0
    trials = http.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 100}).json()
    by_number = {t["number"]: t for t in trials["items"]}
    for trial in by_number.values():
        curve = http.get(f"/api/v1/trials/{trial['id']}").json()["curve"]
        trial["curve"] = [point["metrics"] for point in curve]
    return by_number, seen


def test_a_fused_worker_completes_every_trial_with_the_values_of_an_unfused_one(
    processes: Processes,
) -> None:
    url = processes.server()
    fused, seen = run(processes, url, "4")
    alone, _ = run(processes, url, "1")
    assert sorted(fused) == sorted(alone) == list(range(8))
    for number, trial in fused.items():
        other = alone[number]
        assert trial["state"] == other["state"] == "completed"
        assert trial["params"] == other["params"]  # the same configuration
        assert len(trial["curve"]) == 3
        # Float32 sums in another order: the curves agree closely, the accuracy to a sample or two
        # of the 360 validation digits.
        for mine, theirs in zip(trial["curve"], other["curve"], strict=True):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-3)
        assert trial["value"] == pytest.approx(other["value"], abs=2.5 / 360)
    log = processes.log("fuse4")
    assert log.count("in a group of 4") == 8
    assert log.count("completed in") == 8
    # The workers list showed the fused worker training four trials at once, and says so;
    # during a group's last epoch it also holds the next group, leased ahead (trainer.worker).
    sizes = {len(w["trials"]) for w in seen}
    assert 4 in sizes and max(sizes) <= 8, sizes
    assert {w["fuse"] for w in seen} == {4}


def test_two_fusing_workers_share_a_study_and_hold_only_the_group_they_train(
    processes: Processes,
) -> None:
    url = processes.server()
    http = httpx.Client(base_url=url, timeout=30)
    workers = [processes.worker(name, url, "--fuse", "4") for name in ("w1", "w2")]
    wait_for(lambda: len(http.get("/api/v1/workers").json()) == 2, 120, "both workers")
    doc = spec("fair")
    doc["space"]["batch_size"] = {"type": "categorical", "choices": [32, 64]}
    study = http.post("/api/v1/studies", json=doc)
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    polls: list[tuple[float, dict[str, set[int]]]] = []  # when, and each worker's leases

    def finished() -> bool:
        listed = http.get("/api/v1/workers").json()
        polls.append(
            (time.monotonic(), {w["name"]: {t["trial_id"] for t in w["trials"]} for w in listed})
        )
        return http.get(f"/api/v1/studies/{study_id}").json()["state"] != "running"

    wait_for(finished, 240, "the study of two fusing workers to finish", every=0.2)
    for worker in workers:
        worker.terminate()
        assert worker.wait(30) == 0
    items = http.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 100}).json()["items"]
    assert [t["state"] for t in items] == ["completed"] * 8
    batch = {t["id"]: t["params"]["batch_size"] for t in items}
    assert set(batch.values()) == {32, 64}  # two shapes: no one group holds them all
    # Both workers trained: the server did not hand all of the study to the first to ask.
    assert len({t["worker"] for t in items}) == 2
    # A worker holds only the group it trains: a trial of another shape leased with it goes back
    # to the queue at once (within the few requests that give it back), not after the group's
    # training (about 5 s here), so no worker holds two shapes together for longer than a
    # group's last epoch (while it trains, the next group is leased ahead) and a second.
    last_epoch = max(
        http.get(f"/api/v1/trials/{t['id']}").json()["curve"][-1]["metrics"]["epoch_seconds"]
        for t in items
    )
    since: dict[tuple[str, int, int], float] = {}
    longest = 0.0
    for when, leases in polls:
        for name, held in leases.items():
            mixed = {(name, a, b) for a in held for b in held if a < b and batch[a] != batch[b]}
            for key in [k for k in since if k[0] == name and k not in mixed]:
                del since[key]
            for key in mixed:
                longest = max(longest, when - since.setdefault(key, when))
    assert longest < last_epoch + 1.0, (longest, last_epoch)
