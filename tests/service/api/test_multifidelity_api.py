"""Successive halving and Hyperband through the worker protocol, with checkpoints, driven by a
hand-written worker whose 'training' is a known curve per configuration."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, spec_doc


def _quality(params: dict[str, Any]) -> float:
    """Each configuration's accuracy ceiling: better for lr near 0.01."""
    return 1.0 / (1.0 + abs(params["lr"] - 0.01) * 100)


def _curve(params: dict[str, Any], epoch: int) -> float:
    return _quality(params) * (1 - 0.5**epoch)


class FakeTrainer:
    """Leases, 'trains' each assignment from start_epoch to target_epochs, checkpointing and
    reporting every epoch; records which epochs it trained."""

    def __init__(self, client: TestClient, worker: ApiWorker) -> None:
        self.client, self.worker = client, worker
        self.trained: list[tuple[int, int]] = []  # (trial number, epoch)

    def checkpoint(self, trial: dict[str, Any], epoch: int) -> Any:
        return self.client.put(
            f"/api/v1/workers/{self.worker.id}/trials/{trial['trial_id']}/checkpoint",
            params={"epoch": epoch},
            content=f"state after {epoch}".encode(),
            headers={"X-Lease-Token": trial["token"]},
        )

    def resume_blob(self, trial: dict[str, Any]) -> bytes:
        reply = self.client.get(
            f"/api/v1/workers/{self.worker.id}/trials/{trial['trial_id']}"
            f"/checkpoints/{trial['checkpoint_id']}",
            headers={"X-Lease-Token": trial["token"]},
        )
        assert reply.status_code == 200, reply.text
        return reply.content

    def run(self, stop_after: int | None = None) -> int:
        """Train until there is no more work; returns how many leases were served."""
        leases = 0
        while (stop_after is None or leases < stop_after) and (leased := self.worker.lease()):
            leases += 1
            trial = leased[0]
            if trial["start_epoch"]:
                assert self.resume_blob(trial) == f"state after {trial['start_epoch']}".encode()
            decision = "continue"
            for epoch in range(trial["start_epoch"] + 1, trial["target_epochs"] + 1):
                self.trained.append((trial["number"], epoch))
                assert self.checkpoint(trial, epoch).status_code == 200
                reply = self.worker.report(
                    trial, epoch, val_accuracy=_curve(trial["params"], epoch)
                )
                decision = reply.json()["decision"]
                if decision != "continue":
                    break
            if decision == "continue":
                assert self.worker.post(trial, "complete").status_code == 200
        return leases


SH = {
    "kind": "successive_halving",
    "n_configs": 9,
    "min_epochs": 1,
    "reduction_factor": 3,
    "seed": 0,
}


def _trials(client: TestClient, study_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(
        f"/api/v1/studies/{study_id}/trials", params={"limit": 1000}
    ).json()["items"]
    return items


def test_successive_halving_nine_three_one(client: TestClient) -> None:
    doc = spec_doc("sh", strategy=SH, budget={"epochs": 9, "parallel_trials": 9})
    study = client.post("/api/v1/studies", json=doc).json()
    assert study["max_trials"] == 9
    trainer = FakeTrainer(client, ApiWorker(client))
    trainer.run()
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed"
    assert view["counts"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "completed": 1,
        "pruned": 8,
        "failed": 0,
    }
    trials = _trials(client, study["id"])
    reached = Counter(t["epochs"] for t in trials)
    assert reached == {1: 6, 3: 2, 9: 1}  # 9 reach epoch 1, exactly 3 reach 3, exactly 1 reaches 9
    assert {t["rung"] for t in trials if t["epochs"] == 9} == {2}
    # the promoted ones are the best of their rung
    by_quality = sorted(trials, key=lambda t: _quality(t["params"]), reverse=True)
    assert {t["number"] for t in trials if t["epochs"] >= 3} == {
        t["number"] for t in by_quality[:3]
    }
    assert view["best"]["trial_id"] == by_quality[0]["id"]
    # no retraining: 9*1 + 3*2 + 1*6 epochs, each (trial, epoch) trained once
    assert len(trainer.trained) == 9 * 1 + 3 * 2 + 1 * 6
    assert len(set(trainer.trained)) == len(trainer.trained)
    # each curve is continuous from epoch 1
    winner = client.get(f"/api/v1/trials/{by_quality[0]['id']}").json()
    assert [p["epoch"] for p in winner["curve"]] == list(range(1, 10))
    assert all("not among the best" in t["reason"] for t in trials if t["state"] == "pruned")


def test_hyperband_runs_every_bracket(client: TestClient) -> None:
    strategy = {"kind": "hyperband", "min_epochs": 1, "reduction_factor": 3, "seed": 1}
    doc = spec_doc("hb", strategy=strategy, budget={"epochs": 9, "parallel_trials": 4})
    study = client.post("/api/v1/studies", json=doc).json()
    assert study["max_trials"] == 9 + 5 + 3  # brackets s=2, 1, 0 for 9 epochs, eta 3
    trainer = FakeTrainer(client, ApiWorker(client))
    trainer.run()
    view = client.get(f"/api/v1/studies/{study['id']}").json()
    assert view["state"] == "completed"
    trials = _trials(client, study["id"])
    per_bracket = Counter((t["bracket"], t["epochs"]) for t in trials)
    assert per_bracket == {(0, 1): 6, (0, 3): 2, (0, 9): 1, (1, 3): 4, (1, 9): 1, (2, 9): 3}
    assert view["counts"]["completed"] == 1 + 1 + 3
    expected = (9 + 3 * 2 + 6) + (5 * 3 + 6) + 3 * 9
    assert len(trainer.trained) == expected == len(set(trainer.trained))


def test_stop_pauses_with_the_checkpoint_and_resume_continues_the_curve(
    client: TestClient,
) -> None:
    doc = spec_doc("pause", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 4})
    study = client.post("/api/v1/studies", json=doc).json()
    worker = ApiWorker(client)
    trainer = FakeTrainer(client, worker)
    [trial] = worker.lease()
    for epoch in (1, 2):
        trainer.checkpoint(trial, epoch)
        worker.report(trial, epoch, val_accuracy=0.1 * epoch)
    client.post(f"/api/v1/studies/{study['id']}/stop")
    trainer.checkpoint(trial, 3)
    assert worker.report(trial, 3, val_accuracy=0.3).json() == {"decision": "pause"}
    client.post(f"/api/v1/studies/{study['id']}/resume")
    [again] = worker.lease()
    assert again["start_epoch"] == 3 and again["target_epochs"] == 4
    assert trainer.resume_blob(again) == b"state after 3"
    worker.report(again, 4, val_accuracy=0.4)
    assert worker.post(again, "complete").json()["state"] == "completed"
    curve = client.get(f"/api/v1/trials/{trial['trial_id']}").json()["curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4]


def test_expired_lease_resumes_from_the_last_checkpoint(settings: Settings) -> None:
    lease = 2.0  # seconds; each report renews it, so only the gaps between calls must be shorter
    app = create_app(replace(settings, lease_seconds=lease), reaper=False)
    with TestClient(app) as client:
        doc = spec_doc("crash", budget={"max_trials": 1, "parallel_trials": 1, "epochs": 5})
        client.post("/api/v1/studies", json=doc)
        gone = ApiWorker(client, "gone")
        trainer = FakeTrainer(client, gone)
        [trial] = gone.lease()
        for epoch in (1, 2, 3):
            trainer.checkpoint(trial, epoch)
            assert gone.report(trial, epoch, val_accuracy=0.1 * epoch).status_code == 200
        assert gone.report(trial, 4, val_accuracy=0.4).status_code == 200  # no checkpoint of 4
        time.sleep(lease + 0.5)  # and the worker is heard of no more: its lease runs out
        heir = ApiWorker(client, "heir")
        [again] = heir.lease()
        assert again["trial_id"] == trial["trial_id"] and again["attempt"] == 2
        assert again["start_epoch"] == 3
        assert FakeTrainer(client, heir).resume_blob(again) == b"state after 3"
        curve = client.get(f"/api/v1/trials/{trial['trial_id']}").json()["curve"]
        assert [p["epoch"] for p in curve] == [1, 2, 3]
        assert gone.report(trial, 5, val_accuracy=0.5).status_code == 409  # the lease is gone


@pytest.mark.parametrize(
    "checkpoint_id",
    ["..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "0" * 32, "A" * 32, "x", "..", "0" * 31 + "/"],
)
def test_checkpoint_ids_from_outside_never_leave_the_artifacts_folder(
    client: TestClient, tmp_path: Path, checkpoint_id: str
) -> None:
    (tmp_path / "secret").write_text("top secret")
    client.post("/api/v1/studies", json=spec_doc())
    worker = ApiWorker(client)
    trainer = FakeTrainer(client, worker)
    [trial] = worker.lease()
    assert trainer.checkpoint(trial, 1).status_code == 200
    reply = client.get(
        f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}/checkpoints/{checkpoint_id}",
        headers={"X-Lease-Token": trial["token"]},
    )
    assert reply.status_code == 404
    assert b"top secret" not in reply.content
    assert (tmp_path / "secret").read_text() == "top secret"
    assert [p.suffix for p in (tmp_path / "a").iterdir()] == [".ckpt"]


def test_checkpoint_with_a_stale_token_is_409_and_stores_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    client.post("/api/v1/studies", json=spec_doc())
    worker = ApiWorker(client)
    trainer = FakeTrainer(client, worker)
    [trial] = worker.lease()
    assert trainer.checkpoint({**trial, "token": "forged"}, 1).status_code == 409
    assert not (tmp_path / "a").exists() or list((tmp_path / "a").iterdir()) == []
    assert trainer.checkpoint(trial, 1).status_code == 200
    assert trainer.checkpoint(trial, 2).status_code == 200
    assert len(list((tmp_path / "a").iterdir())) == 1  # only the latest checkpoint is kept


def test_unusable_artifacts_folder_fails_the_trial_with_the_reason(
    client: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "a").write_text("a file where the artifacts folder should be")  # fails for root too
    client.post("/api/v1/studies", json=spec_doc())
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = FakeTrainer(client, worker).checkpoint(trial, 1)
    assert reply.status_code == 507
    detail = client.get(f"/api/v1/trials/{trial['trial_id']}").json()
    assert detail["state"] == "failed" and "checkpoint could not be stored" in detail["reason"]
    assert client.get("/healthz").status_code == 200  # the server keeps serving
