"""A study naming a plugin model that no active worker has waits with a clear reason, not a
silent hang, and `hpo submit` says so."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import ApiWorker, Processes, spec_doc, wait_for
from tests.reliability.conftest import get

WAITING = "waiting: no active worker can run model 'vit' with dataset 'synthetic'"
VIT = {"model": "vit", "dataset": "synthetic"}


def test_a_study_no_active_worker_can_run_says_why_it_waits(settings: Settings) -> None:
    app = create_app(replace(settings, stale_worker_seconds=1.0), reaper=False)
    with TestClient(app) as http:
        gone = ApiWorker(http, "plugin-box", models=["vit"])  # once announced the model
        assert http.post(f"/api/v1/workers/{gone.id}/deregister").status_code == 204
        budget = {"max_trials": 1, "parallel_trials": 1, "epochs": 1}
        created = http.post("/api/v1/studies", json=spec_doc("vit", workload=VIT, budget=budget))
        assert created.status_code == 201 and created.json()["reason"] == WAITING
        plain = ApiWorker(http, "plain")  # built-ins only
        assert plain.lease() == []
        study = get(http, "/api/v1/studies/1")
        assert study["state"] == "running" and study["reason"] == WAITING
        assert get(http, "/api/v1/studies")[0]["reason"] == WAITING

        able = ApiWorker(http, "vit-box", models=["vit"])
        assert get(http, "/api/v1/studies/1")["reason"] is None
        [trial] = able.lease()
        assert able.run(trial, [0.5]).json()["state"] == "completed"
        assert get(http, "/api/v1/studies/1")["state"] == "completed"

        time.sleep(1.1)  # the only able worker goes quiet (crashed, unplugged): stale
        again = http.post("/api/v1/studies", json=spec_doc("vit2", workload=VIT, budget=budget))
        assert again.json()["reason"] == WAITING


@pytest.mark.e2e
def test_hpo_submit_says_why_the_study_waits_and_goes_on_when_a_worker_comes(
    processes: Processes, tmp_path: Path
) -> None:
    url = processes.server()
    with httpx.Client(base_url=url, timeout=30) as http:
        gone = ApiWorker(http, "plugin-box", models=["vit"])
        assert http.post(f"/api/v1/workers/{gone.id}/deregister").status_code == 204
        spec = tmp_path / "vit.yaml"
        budget = {"max_trials": 1, "parallel_trials": 1, "epochs": 2}
        spec.write_text(yaml.safe_dump(spec_doc("vit", workload=VIT, budget=budget)))
        submit = processes.start("submit", "submit", str(spec), "--server", url, "--wait")
        wait_for(lambda: WAITING in processes.log("submit"), 60, "submit to say why it waits")
        out = processes.log("submit")
        assert f"study 1 'vit' created: {url}/#/studies/1\n{WAITING}\n" in out
        assert f"0/1 trials done, 0 running, best val_accuracy -; {WAITING}" in out
        able = ApiWorker(http, "vit-box", models=["vit"])
        [trial] = able.lease()
        assert able.run(trial, [0.4, 0.6]).status_code == 200
    assert submit.wait(60) == 0, processes.log("submit")
    out = processes.log("submit")
    assert "1/1 trials done" in out and "study 'vit' completed" in out
