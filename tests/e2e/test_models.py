"""The tuned model end to end: a real `hpo server` and `hpo worker` train a digits study, the
best trial's model file is downloaded over HTTP and rebuilt by `hpo.load_model`, and a study
keeps only its best `keep_models` files."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import hpo
from tests.conftest import Processes, install_example_plugin, spec_doc, wait_for
from tests.support import api
from trainer import plugins
from trainer.data import load_dataset
from trainer.params import Params
from trainer.train import evaluate

pytestmark = pytest.mark.e2e

WORKLOAD = {"model": "mlp", "dataset": "digits", "width": 32, "batch_size": 64}


def _study(name: str, **overrides: Any) -> dict[str, Any]:
    sections: dict[str, Any] = {
        "budget": {"max_trials": 3, "parallel_trials": 1, "epochs": 2},
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
            "norm": {"type": "categorical", "choices": ["none", "batch", "layer"]},
        },
        "workload": WORKLOAD,
    }
    return spec_doc(name, **{**sections, **overrides})


def _finished(url: str, study_id: int) -> dict[str, Any]:
    study = api.finished(url, study_id, 240)
    assert study["state"] == "completed", study
    return study


def _model_files(folder: Path) -> list[Path]:
    """The files of the artifacts folder that are model files (the rest are checkpoints)."""
    found = []
    for path in sorted(folder.glob("*")):
        content = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(content, dict) and content.get("format") == "hpo-model":
            found.append(path)
    return found


def _raw_val_split(trial: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The trial's validation split rebuilt from its data params, not standardized."""
    params = {**WORKLOAD, **trial["params"], "standardize": False}
    data = load_dataset(params.pop("dataset"), Params(params))
    return data.x_val, data.y_val


def test_the_best_model_downloads_and_reproduces_its_validation_accuracy(
    processes: Processes,
) -> None:
    url = processes.server()
    processes.worker("w", url)
    client = hpo.Client(url)
    study = client.create_study(_study("digits-models"))
    done = _finished(url, study.id)
    best = done["best"]
    assert best["model_url"] == f"/api/v1/trials/{best['trial_id']}/model"

    reply = httpx.get(url + best["model_url"], timeout=30)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    content = torch.load(io.BytesIO(reply.content), weights_only=True)
    assert content["model"] == "mlp" and content["trial"]["trial_id"] == best["trial_id"]
    assert content["trial"]["metrics"]["val_accuracy"] == pytest.approx(best["value"], abs=1e-12)

    model = hpo.load_model(reply.content)
    assert not model.training
    trial = httpx.get(f"{url}/api/v1/trials/{best['trial_id']}", timeout=30).json()
    assert trial["model_url"] == best["model_url"]
    x_val, y_val = _raw_val_split(trial)
    _loss, accuracy = evaluate(model, x_val, y_val)
    assert abs(accuracy - best["value"]) <= 1e-6
    assert accuracy > 0.5  # a trained model, not chance on 10 classes

    # The client's way: the same file, the same predictions.
    again = client.study("digits-models").best_model()
    assert torch.equal(again(x_val[:50]), model(x_val[:50]))


def test_a_study_keeps_only_its_best_models_and_deletes_them_with_itself(
    processes: Processes,
) -> None:
    url = processes.server()
    processes.worker("w", url)
    client = hpo.Client(url)
    study = client.create_study(_study("keep-one", keep_models=1))
    done = _finished(url, study.id)
    trials = study.trials()
    assert [t.state.value for t in trials] == ["completed"] * 3
    best = done["best"]
    with_models = [t for t in trials if t.model_url is not None]
    assert [t.id for t in with_models] == [best["trial_id"]]
    artifacts = processes.folder / "artifacts"
    [kept] = _model_files(artifacts)
    kept_trial = torch.load(kept, weights_only=True)["trial"]
    assert kept_trial["trial_id"] == best["trial_id"]

    other = next(t for t in trials if t.id != best["trial_id"])
    refused = httpx.get(f"{url}/api/v1/trials/{other.id}/model", timeout=30)
    assert refused.status_code == 404
    assert "only the best trial's model is kept" in refused.json()["detail"]
    with pytest.raises(hpo.ApiError) as missing:
        other.model()
    assert missing.value.status == 404

    study.delete()
    assert _model_files(artifacts) == []
    assert list(artifacts.glob("*")) == []  # checkpoints too


def test_keep_models_zero_uploads_nothing(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w", url)
    study = hpo.Client(url).create_study(
        _study("keep-none", keep_models=0, budget={"max_trials": 1, "epochs": 1})
    )
    done = _finished(url, study.id)
    assert done["best"]["model_url"] is None
    assert _model_files(processes.folder / "artifacts") == []
    reply = httpx.get(f"{url}/api/v1/trials/{done['best']['trial_id']}/model", timeout=30)
    assert reply.status_code == 404
    assert "keeps no models (keep_models: 0)" in reply.json()["detail"]


def test_fused_trials_upload_the_same_unfused_model_file(processes: Processes) -> None:
    url = processes.server()
    processes.worker("w", url, "--fuse", "3")
    client = hpo.Client(url)
    doc = _study("fused-models")
    doc["budget"]["parallel_trials"] = 3
    doc["space"]["norm"] = {"type": "categorical", "choices": ["layer"]}  # one fusion key
    study = client.create_study(doc)
    done = _finished(url, study.id)
    assert "in a group of 3" in processes.log("w")
    assert [t.model_url is not None for t in study.trials()] == [True] * 3  # keep_models 3
    for trial in study.trials():
        model = trial.model()
        x_val, y_val = _raw_val_split(trial.model_dump())
        _loss, accuracy = evaluate(model, x_val, y_val)
        # The fused group evaluated each member on its fused weights; the file holds the same
        # weights unfused, so the two evaluations may differ by float rounding only.
        assert abs(accuracy - (trial.value or 0.0)) <= 1 / len(y_val) + 1e-9
    assert done["best"]["model_url"] is not None


def test_a_plugin_models_file_loads_where_the_plugin_is_installed(
    processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_example_plugin(tmp_path / "site")
    url = processes.server()
    pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    processes.worker("w", url, PYTHONPATH=pythonpath)
    wait_for(lambda: httpx.get(f"{url}/api/v1/workers", timeout=10).json(), 60, "the worker")
    workload = {"model": "two_layer", "dataset": "rings", "n_samples": 600, "hidden": 16}
    doc = spec_doc(
        "plugin-models",
        budget={"max_trials": 2, "parallel_trials": 1, "epochs": 2},
        space={"lr": {"type": "float", "low": 1e-2, "high": 0.1, "log": True}},
        workload=workload,
    )
    study = hpo.Client(url).create_study(doc)
    best = _finished(url, study.id)["best"]
    blob = httpx.get(url + best["model_url"], timeout=30).content
    assert torch.load(io.BytesIO(blob), weights_only=True)["package"] == "hpo-example-plugin"

    monkeypatch.syspath_prepend(str(site))
    plugins.discover.cache_clear()
    try:
        model = hpo.load_model(blob)
        params = {**workload, **best["params"], "standardize": False}
        data = load_dataset(params.pop("dataset"), Params(params))
        _loss, accuracy = evaluate(model, data.x_val, data.y_val)
        assert abs(accuracy - best["value"]) <= 1e-6
    finally:
        plugins.discover.cache_clear()
        sys.modules.pop("hpo_example_plugin", None)
