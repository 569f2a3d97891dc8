"""Kept model files (issue 16 item 3) through the API: a worker uploads a trial's model before
completing it, the study keeps its best `keep_models` files, the others are refused or deleted
when a better trial completes, and users download a kept one. Runs on SQLite and PostgreSQL
(the `client` fixture); the files are opaque bytes here (tests/e2e/test_models.py loads real
ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import USER_TOKEN, WORKER_TOKEN, ApiWorker, spec_doc


def _study(client: TestClient, keep: int | None, trials: int = 4) -> dict[str, Any]:
    doc = spec_doc("models", budget={"max_trials": trials, "parallel_trials": trials, "epochs": 1})
    if keep is not None:
        doc["keep_models"] = keep
    reply = client.post("/api/v1/studies", json=doc)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def _upload(client: TestClient, worker: ApiWorker, trial: dict[str, Any], blob: bytes) -> Any:
    return client.put(
        f"/api/v1/workers/{worker.id}/trials/{trial['trial_id']}/model",
        content=blob,
        headers={"X-Lease-Token": trial["token"], "Content-Type": "application/octet-stream"},
    )


def _finish(
    client: TestClient, worker: ApiWorker, trial: dict[str, Any], value: float
) -> dict[str, Any]:
    """Report `value`, upload a model naming the trial, complete; the upload's answer."""
    assert worker.report(trial, 1, val_accuracy=value).status_code == 200
    saved = _upload(client, worker, trial, f"model of {trial['trial_id']}".encode())
    assert saved.status_code == 200, saved.text
    assert worker.post(trial, "complete").json()["state"] == "completed"
    answer: dict[str, Any] = saved.json()
    return answer


def _kept(client: TestClient, study_id: int) -> dict[int, str]:
    items = client.get(f"/api/v1/studies/{study_id}/trials").json()["items"]
    return {t["id"]: t["model_url"] for t in items if t["model_url"] is not None}


def _files(settings_dir: Path) -> int:
    return len(list(settings_dir.glob("*"))) if settings_dir.exists() else 0


def test_the_best_k_models_are_kept_and_the_rest_deleted(
    client: TestClient, tmp_path: Path
) -> None:
    study = _study(client, keep=2)
    worker = ApiWorker(client)
    a, b, c, d = worker.lease(4)
    assert a["keep_model"] is True
    assert _finish(client, worker, a, 0.5)["kept"] is True
    assert _finish(client, worker, b, 0.7)["kept"] is True
    assert set(_kept(client, study["id"])) == {a["trial_id"], b["trial_id"]}
    # Better than the worse of the two: c is kept and a's file deleted.
    assert _finish(client, worker, c, 0.6)["kept"] is True
    assert set(_kept(client, study["id"])) == {b["trial_id"], c["trial_id"]}
    assert _files(tmp_path / "a") == 2
    # Worse than both kept ones: not stored at all.
    refused = _finish(client, worker, d, 0.55)
    assert refused["kept"] is False and refused["model_id"] is None
    assert refused["detail"] == (
        "only the best 2 trials' models are kept; this one is not among them"
    )
    assert _files(tmp_path / "a") == 2

    best = client.get(f"/api/v1/studies/{study['id']}").json()["best"]
    assert best["trial_id"] == b["trial_id"]
    assert best["model_url"] == f"/api/v1/trials/{b['trial_id']}/model"
    download = client.get(best["model_url"])
    assert download.status_code == 200
    assert download.content == f"model of {b['trial_id']}".encode()
    assert "models-trial-" in download.headers["content-disposition"]
    detail = client.get(f"/api/v1/trials/{a['trial_id']}").json()
    assert detail["model_url"] is None
    gone = client.get(f"/api/v1/trials/{a['trial_id']}/model")
    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        f"only the best 2 trials' models are kept; trial {a['trial_id']} is not among them"
    )

    assert client.delete(f"/api/v1/studies/{study['id']}").status_code == 204
    assert _files(tmp_path / "a") == 0


def test_keep_models_defaults_to_3_and_0_stores_none(client: TestClient) -> None:
    study = _study(client, keep=None, trials=1)
    assert study["spec"]["keep_models"] == 3
    client.delete(f"/api/v1/studies/{study['id']}")
    study = _study(client, keep=0, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert trial["keep_model"] is False
    refused = _finish(client, worker, trial, 0.9)
    assert refused == {
        "trial_id": trial["trial_id"],
        "kept": False,
        "model_id": None,
        "detail": "study 'models' keeps no models (keep_models: 0)",
    }
    reply = client.get(f"/api/v1/trials/{trial['trial_id']}/model")
    assert reply.status_code == 404
    assert reply.json()["detail"] == "study 'models' keeps no models (keep_models: 0)"


def test_keep_models_is_checked_with_its_field_named(client: TestClient) -> None:
    for bad in (-1, "three", 1001):
        doc = spec_doc("bad-keep", keep_models=bad)
        reply = client.post("/api/v1/studies", json=doc)
        assert reply.status_code == 422, reply.text
        assert any(error["loc"][-1] == "keep_models" for error in reply.json()["detail"]), (
            reply.text
        )


def test_a_trial_that_fails_after_its_upload_loses_its_model(
    client: TestClient, tmp_path: Path
) -> None:
    _study(client, keep=3, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.report(trial, 1, val_accuracy=0.5).status_code == 200
    assert _upload(client, worker, trial, b"weights").json()["kept"] is True
    assert _files(tmp_path / "a") == 1
    assert worker.post(trial, "fail", reason="boom").status_code == 200
    assert _files(tmp_path / "a") == 0
    reply = client.get(f"/api/v1/trials/{trial['trial_id']}/model")
    assert reply.status_code == 404
    assert "is failed: only completed trials keep a model" in reply.json()["detail"]


def test_an_upload_with_a_stale_token_is_refused(client: TestClient) -> None:
    _study(client, keep=3, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    reply = _upload(client, worker, {**trial, "token": "not-the-token"}, b"weights")
    assert reply.status_code == 409
    assert "stale" in reply.json()["detail"]
    assert client.get("/api/v1/trials/999/model").status_code == 404


def test_the_download_needs_the_user_token(secured: TestClient) -> None:
    assert secured.get("/api/v1/trials/1/model").status_code == 401
    worker = {"Authorization": f"Bearer {WORKER_TOKEN}"}
    assert secured.get("/api/v1/trials/1/model", headers=worker).status_code == 403
    user = {"Authorization": f"Bearer {USER_TOKEN}"}
    assert secured.get("/api/v1/trials/1/model", headers=user).status_code == 404


def test_a_multi_objective_study_keeps_its_pareto_front_models(
    client: TestClient, tmp_path: Path
) -> None:
    doc = spec_doc("models", budget={"max_trials": 3, "parallel_trials": 3, "epochs": 1})
    del doc["objective"]
    doc["objectives"] = [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "train_seconds", "direction": "minimize"},
    ]
    study = client.post("/api/v1/studies", json=doc).json()
    worker = ApiWorker(client)
    a, b, c = worker.lease(3)
    # c is beaten by a on both objectives; a and b each win one.
    runs = ((0.9, 10.0), (0.8, 5.0), (0.7, 20.0))
    for trial, (accuracy, seconds) in zip((a, b, c), runs, strict=True):
        reply = worker.report(trial, 1, val_accuracy=accuracy, train_seconds=seconds)
        assert reply.status_code == 200, reply.text
        assert _upload(client, worker, trial, b"weights").json()["kept"] is True
        assert worker.post(trial, "complete").json()["state"] == "completed"
    assert set(_kept(client, study["id"])) == {a["trial_id"], b["trial_id"]}
    assert _files(tmp_path / "a") == 2
    front = client.get(f"/api/v1/studies/{study['id']}").json()["best"]
    assert {t["trial_id"]: t["model_url"] is not None for t in front} == {
        a["trial_id"]: True,
        b["trial_id"]: True,
    }
    reply = client.get(f"/api/v1/trials/{c['trial_id']}/model")
    assert reply.status_code == 404
    assert reply.json()["detail"] == (
        f"only the Pareto-front trials' models are kept; trial {c['trial_id']} is not among them"
    )


def test_a_trial_handed_out_again_drops_the_model_of_its_lost_attempt(
    client: TestClient, tmp_path: Path
) -> None:
    _study(client, keep=3, trials=1)
    worker = ApiWorker(client)
    [trial] = worker.lease()
    assert worker.report(trial, 1, val_accuracy=0.5).status_code == 200
    assert _upload(client, worker, trial, b"first attempt").json()["kept"] is True
    assert worker.post(trial, "release").json()["state"] == "queued"  # lost before completing
    [again] = worker.lease()
    assert again["trial_id"] == trial["trial_id"]
    assert _files(tmp_path / "a") == 0
    assert worker.report(again, 1, val_accuracy=0.25).status_code == 200
    assert _upload(client, worker, again, b"second attempt").json()["kept"] is True
    assert worker.post(again, "complete").json()["state"] == "completed"
    reply = client.get(f"/api/v1/trials/{trial['trial_id']}/model")
    assert reply.content == b"second attempt"
