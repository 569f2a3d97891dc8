"""A trial's model file (trainer.model_file) and `hpo.load_model`: built-in and plugin models
come back as the trained module in eval mode, taking raw inputs; a file that is not one, or
whose model is not installed, is refused with a message saying what to do."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import hpo
from hpo.protocol import Decision
from trainer import model_file, plugins
from trainer.data import load_dataset
from trainer.params import Params
from trainer.train import TrainConfig, TrainResult, evaluate, train

TRIAL = {"study": "s", "trial_id": 7, "number": 2}


def _trained(model: str, dataset: str, params: dict[str, Any], epochs: int = 2) -> TrainResult:
    config = TrainConfig(model, dataset, epochs, dict(params), seed=5)
    result = train(config, lambda epoch, metrics: Decision.CONTINUE)
    assert result.run is not None  # a completed trial keeps its run for the model file
    return result


def test_a_builtin_model_loads_and_reproduces_its_validation_accuracy(tmp_path: Path) -> None:
    params = {"lr": 0.01, "batch_size": 64, "norm": "batch", "depth": 2, "channels": 8}
    result = _trained("cnn", "digits", params)
    assert result.run is not None
    path = tmp_path / "model.pt"
    path.write_bytes(model_file.dump(result.run, "cnn", params, TRIAL))

    content = torch.load(path, weights_only=True)  # only tensors, dicts, lists, str, numbers
    assert (content["format"], content["version"], content["model"]) == ("hpo-model", 1, "cnn")
    assert content["package"] == "hpo-service"
    assert content["input_shape"] == [1, 8, 8] and content["n_classes"] == 10

    model = hpo.load_model(path)
    assert not model.training
    assert model.hpo_trial == TRIAL
    raw = load_dataset("digits", Params({**params, "standardize": False}))
    _loss, accuracy = evaluate(model, raw.x_val, raw.y_val)
    assert accuracy == result.metrics["val_accuracy"]


def test_without_standardization_the_model_is_the_trained_module_itself() -> None:
    params = {"lr": 0.01, "standardize": False, "width": 16}
    result = _trained("mlp", "digits", params, epochs=1)
    assert result.run is not None
    model = hpo.load_model(model_file.dump(result.run, "mlp", params, TRIAL))
    assert isinstance(model, torch.nn.Sequential)
    x = result.run.data.x_val[:20]
    assert torch.equal(model(x), result.run.model.eval()(x))


def test_a_plugin_model_loads_where_its_package_is_installed(
    example_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {"lr": 0.05, "hidden": 16, "n_samples": 300}
    result = _trained("two_layer", "rings", params)
    assert result.run is not None
    blob = model_file.dump(result.run, "two_layer", params, TRIAL)
    assert torch.load(io.BytesIO(blob), weights_only=True)["package"] == "hpo-example-plugin"

    model = hpo.load_model(blob)
    raw = load_dataset("rings", Params({**params, "standardize": False}))
    _loss, accuracy = evaluate(model, raw.x_val, raw.y_val)
    assert accuracy == result.metrics["val_accuracy"]

    # Where the plugin is not installed, the message names the model and the package.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(example_plugin)])
    plugins.discover.cache_clear()
    with pytest.raises(hpo.ModelFileError) as missing:
        hpo.load_model(blob)
    assert str(missing.value) == (
        "model 'two_layer' of this file is not installed here: install the package "
        "'hpo-example-plugin', which provides it as an 'hpo.models' entry point"
    )


def test_what_is_not_a_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(hpo.ModelFileError, match="not a model file of hpo"):
        hpo.load_model(b"not a file")
    checkpoint = io.BytesIO()
    torch.save({"format": 1, "epoch": 3}, checkpoint)  # a checkpoint, not a model file
    with pytest.raises(hpo.ModelFileError, match="no 'format': 'hpo-model'"):
        hpo.load_model(checkpoint.getvalue())
    # A pickle that would run code is refused by weights_only before anything runs.
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hpo-model", "payload": Path("/etc/passwd")}, evil)
    with pytest.raises(hpo.ModelFileError, match="not a model file of hpo"):
        hpo.load_model(evil)
    newer = io.BytesIO()
    torch.save({"format": "hpo-model", "version": 99}, newer)
    with pytest.raises(hpo.ModelFileError, match="version 99; this trainer reads 1"):
        hpo.load_model(newer.getvalue())
