"""The artifacts folder cannot be written (simulated by a regular file where the folder should
be, which stops root as well as anyone): the trial whose checkpoint is refused fails with the
reason, the server keeps serving, and nothing else is lost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, Processes, spec_doc
from tests.reliability.conftest import every_view_answers, finished, get, trials

REASON = "its checkpoint could not be stored: cannot store the artifact in "


def _unwritable(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifacts folder's parent should be")
    return blocker / "artifacts"


def _upload(http: TestClient, worker: ApiWorker, trial: dict, epoch: int) -> httpx.Response:
    return http.put(
        f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}/checkpoint",
        params={"epoch": epoch},
        content=b"model weights",
        headers={"X-Lease-Token": trial["token"], "Content-Type": "application/octet-stream"},
    )


def test_a_refused_checkpoint_fails_its_trial_only(settings: Settings, tmp_path: Path) -> None:
    artifacts = _unwritable(tmp_path)
    app = create_app(replace(settings, artifacts_dir=artifacts), reaper=False)
    with TestClient(app) as http:
        budget = {"max_trials": 3, "parallel_trials": 2, "epochs": 2}
        study = http.post("/api/v1/studies", json=spec_doc("disk", budget=budget)).json()
        worker = ApiWorker(http)
        victim, bystander = worker.lease(count=2)
        assert worker.report(victim, 1, val_accuracy=0.4).status_code == 200
        refused = _upload(http, worker, victim, 1)
        assert refused.status_code == 507
        assert refused.json()["detail"].startswith(f"cannot store the artifact in {artifacts}")
        failed = get(http, f"/api/v1/trials/{victim['trial_id']}")
        assert failed["state"] == "failed" and failed["reason"].startswith(REASON + str(artifacts))
        assert failed["curve"] == [{"epoch": 1, "metrics": {"val_accuracy": 0.4}}]  # kept
        assert worker.report(victim, 2, val_accuracy=0.9).json() == {"decision": "stop"}

        # The other trial, the study and the server carry on.
        assert worker.run(bystander, [0.5, 0.6]).json()["state"] == "completed"
        every_view_answers(http, study["id"])
        # Once the folder can be written again, checkpoints are stored again.
        (tmp_path / "not-a-folder").unlink()
        [third] = worker.lease()
        assert worker.report(third, 1, val_accuracy=0.7).status_code == 200
        assert _upload(http, worker, third, 1).json()["epoch"] == 1
        assert worker.run(third, [0.7, 0.8]).json()["checkpoint_epoch"] == 1
        view = get(http, f"/api/v1/studies/{study['id']}")
        assert view["state"] == "completed"
        assert (view["counts"]["completed"], view["counts"]["failed"]) == (2, 1)
        assert view["best"]["trial_id"] == third["trial_id"]


@pytest.mark.e2e
def test_a_real_worker_fails_the_trial_and_goes_on_when_checkpoints_cannot_be_stored(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server(HPO_ARTIFACTS_DIR=str(_unwritable(tmp_path)))
    processes.worker("w", url)
    budget = {"max_trials": 2, "parallel_trials": 1, "epochs": 2}
    # A checkpoint after epoch 1 (checkpoint_seconds 0), which the folder refuses.
    workload = {"model": "mlp", "dataset": "synthetic", "checkpoint_seconds": 0}
    doc = spec_doc("disk", budget=budget, workload=workload)
    with httpx.Client(base_url=url, timeout=30) as http:
        study_id = http.post("/api/v1/studies", json=doc).json()["id"]
        study = finished(http, study_id, timeout=120)
        assert study["state"] == "failed" and study["reason"] == "every trial failed"
        for trial in trials(http, study_id):
            assert trial["state"] == "failed" and trial["reason"].startswith(REASON)
            assert [p["epoch"] for p in get(http, f"/api/v1/trials/{trial['id']}")["curve"]] == []
        assert get(http, "/healthz") == {"status": "ok"}
    log = processes.log("w")
    assert log.count("checkpoint of trial") == 2 and log.count("dropped") == 2, log
    assert "Traceback" not in log + processes.log("server")
