"""Plugins: models, datasets and training functions from entry points (examples/plugin)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hpo.protocol import Decision
from trainer import plugins
from trainer.data import Dataset, load_dataset
from trainer.params import Params
from trainer.train import TrainConfig, TrainingError, train


def _curve(config: TrainConfig) -> list[dict[str, float]]:
    curve: list[dict[str, float]] = []
    train(config, lambda epoch, metrics: curve.append(metrics) or Decision.CONTINUE)
    return curve


def test_the_worker_announces_the_installed_plugins(example_plugin: Path) -> None:
    caps = plugins.discover().capabilities()
    assert (caps["models"], caps["datasets"]) == (["quadratic", "two_layer"], ["rings"])
    # and the tunables its model declares, scoped to it
    declared = [(t["name"], t["models"]) for t in caps["tunables"]]
    assert declared == [("hidden", ["two_layer"]), ("dropout", ["two_layer"])]


def test_without_plugins_there_is_nothing_to_announce() -> None:
    plugins.discover.cache_clear()
    try:
        assert plugins.discover().capabilities() == {"models": [], "datasets": []}
    finally:
        plugins.discover.cache_clear()


def test_plugin_model_on_plugin_dataset_learns(example_plugin: Path) -> None:
    config = TrainConfig(
        "two_layer", "rings", epochs=6, params={"lr": 0.05, "hidden": 64, "n_samples": 900}
    )
    curve = _curve(config)
    assert len(curve) == 6
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert curve[-1]["val_accuracy"] > 0.6  # three rings: chance is 1/3


def test_a_plugin_dataset_is_cached_on_the_options_it_reads(example_plugin: Path) -> None:
    # `noise` is an option of the plugin's own, which the trainer knows nothing about.
    def rings(**params: object) -> Dataset:
        return load_dataset("rings", Params({"n_samples": 300, **params}))

    first = rings(noise=0.1, lr=0.5)
    assert rings(noise=0.1, lr=0.01) is first  # lr is not the dataset's: served from the cache
    noisier = rings(noise=0.4, lr=0.5)
    assert noisier is not first
    assert not torch.equal(noisier.x_train, first.x_train)


def test_plugin_training_function_keeps_the_contract(example_plugin: Path) -> None:
    decisions = iter([Decision.CONTINUE, Decision.PRUNE])
    seen: list[int] = []

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        seen.append(epoch)
        return next(decisions)

    result = train(TrainConfig("quadratic", "anything", epochs=5, params={"lr": 0.1}), report)
    assert seen == [1, 2] and result.decision is Decision.PRUNE


def test_unknown_names_list_the_plugins_too(example_plugin: Path) -> None:
    with pytest.raises(TrainingError, match="two_layer"):
        _curve(TrainConfig("nope", "synthetic", epochs=1, params={}))


def test_a_broken_plugin_is_logged_and_left_out(
    example_plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry_points = next(example_plugin.glob("*.dist-info")) / "entry_points.txt"
    entry_points.write_text(entry_points.read_text() + "broken = no_such_module:build\n")
    with caplog.at_level(logging.ERROR, logger="hpo.plugins"):
        found = plugins.discover()
    assert "quadratic" in found.trainers and "broken" not in found.trainers
    assert "broken = no_such_module:build" in caplog.text
