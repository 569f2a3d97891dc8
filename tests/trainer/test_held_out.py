"""The held-out test score (issue 13 item 3): a trial that completes its full budget evaluates
its final model once on the test split, which is disjoint from the training and validation
splits; a paused or pruned trial does not, and a dataset without a test split says so. A fused
group scores each member with its own weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hpo.protocol import Decision, HeldOutMetrics
from service.api.schemas import Strict
from tests.trainer.fused_support import RELATIVE, SMALL, Recorder, one_thread
from trainer.client import WorkerClient
from trainer.data import load_dataset
from trainer.fused.loop import train_group
from trainer.params import Params
from trainer.train import Run, TrainConfig, build_run, train, train_epoch

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]  # the fixture, imported for pytest (example_plugin is in conftest)

DIGITS = {"batch_size": 64, "lr": 3e-3, "width": 32, "depth": 1}


def _trained(config: TrainConfig, dtype: torch.dtype = torch.float32) -> Run:
    """`config` trained to its end by trainer.train's own epoch function, outside `train`."""
    run = build_run(config)
    run.model.to(dtype)
    run.data = dataclasses.replace(run.data, x_train=run.data.x_train.to(dtype))
    for epoch in range(1, config.epochs + 1):
        train_epoch(run, epoch)
    return run


def _by_hand(run: Run) -> dict[str, float]:
    """The model's test loss and accuracy, computed here in one batch (not trainer.evaluate)."""
    model = run.model
    model.eval()
    x = run.data.x_test.to(next(model.parameters()).dtype)
    with torch.no_grad():
        logits = model(x).double()
    y = run.data.y_test
    return {
        "test_accuracy": (logits.argmax(dim=1) == y).double().mean().item(),
        "test_loss": F.cross_entropy(logits, y).item(),
    }


def _close(got: dict[str, Any] | None, expected: dict[str, float]) -> None:
    assert got is not None and set(got) == {"test_accuracy", "test_loss"}
    HeldOutMetrics.model_validate(got)  # what the server accepts
    assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-12)
    assert got["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)


def test_a_completed_trial_scores_its_final_model_on_the_test_split() -> None:
    config = TrainConfig("mlp", "digits", 3, dict(DIGITS), seed=3)
    recorder = Recorder()
    result = train(config, recorder)
    assert result.decision is None and recorder.epochs == [1, 2, 3]
    expected = _by_hand(_trained(config))
    _close(result.test_metrics, expected)
    # 180 of digits' 1797 samples (test_fraction 0.1); the score is no validation figure.
    assert len(build_run(config).data.y_test) == 180
    assert all("test_accuracy" not in metrics for metrics in recorder.curve)
    assert result.test_metrics != {
        "test_accuracy": recorder.curve[-1]["val_accuracy"],
        "test_loss": recorder.curve[-1]["val_loss"],
    }


def test_the_test_split_shares_no_sample_with_training_or_validation() -> None:
    """Gaussian samples are all distinct, so a shared row would mean a shared sample."""
    params = {"n_samples": 600, "n_features": 6, "val_fraction": 0.2, "test_fraction": 0.15}
    data = load_dataset("synthetic", Params(params))
    rows = {
        split: {tuple(row) for row in getattr(data, f"x_{split}").numpy().round(5).tolist()}
        for split in ("train", "val", "test")
    }
    assert (len(rows["train"]), len(rows["val"]), len(rows["test"])) == (390, 120, 90)
    assert not rows["test"] & rows["train"] and not rows["test"] & rows["val"]
    assert not rows["train"] & rows["val"]


def test_a_source_test_split_is_kept_whole_and_apart(tmp_path: Any) -> None:
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(200, 5)), rng.normal(size=(40, 5)) + 100.0
    y, y_test = rng.integers(0, 3, 200), rng.integers(0, 3, 40)
    path = tmp_path / "given.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data = load_dataset(f"npz:{path}", Params({"standardize": False}))
    assert torch.equal(data.y_test, torch.from_numpy(y_test))
    assert len(data.y_train) + len(data.y_val) == 200  # the test samples went nowhere else
    assert data.x_train.max() < 50 < data.x_test.min()


def test_an_empty_test_split_is_unavailable_with_the_reason() -> None:
    config = TrainConfig("mlp", "digits", 2, {**DIGITS, "test_fraction": 0.0})
    result = train(config, Recorder())
    assert result.decision is None
    assert result.test_metrics == {
        "unavailable": "the dataset has no test split (test_fraction 0 and none given)"
    }
    HeldOutMetrics.model_validate(result.test_metrics)


def test_a_plugin_dataset_without_a_test_split_is_scored_on_what_is_split_off(
    example_plugin: Any,
) -> None:
    """The example's `rings` gives no x_test: test_fraction (0.1) of it is held out, and with
    test_fraction 0 there is nothing to score on."""
    params = {"lr": 0.05, "hidden": 32, "n_samples": 400}
    split = train(TrainConfig("two_layer", "rings", 2, params), Recorder())
    assert split.test_metrics is not None and set(split.test_metrics) == {
        "test_accuracy",
        "test_loss",
    }
    none = train(TrainConfig("two_layer", "rings", 2, {**params, "test_fraction": 0}), Recorder())
    assert none.test_metrics == {
        "unavailable": "the dataset has no test split (test_fraction 0 and none given)"
    }


def test_a_plugin_training_function_without_a_score_says_so(example_plugin: Any) -> None:
    config = TrainConfig("quadratic", "anything", epochs=3, params={"lr": 0.1})
    result = train(config, Recorder())
    assert result.decision is None
    assert result.test_metrics == {
        "unavailable": "the training function of 'quadratic' gives no test metrics"
    }
    pruned = train(config, Recorder(lambda epoch: "prune"))
    assert pruned.decision is Decision.PRUNE and pruned.test_metrics is None


@pytest.mark.parametrize("decision", [Decision.PRUNE, Decision.PAUSE, Decision.STOP])
def test_a_trial_ended_by_an_answer_has_no_test_score(decision: Decision) -> None:
    config = TrainConfig("mlp", "digits", 3, dict(DIGITS))
    result = train(config, Recorder(lambda epoch: decision if epoch == 2 else "continue"))
    assert result.decision is decision and result.test_metrics is None


def test_a_rung_end_short_of_the_full_budget_has_no_test_score() -> None:
    config = TrainConfig("mlp", "digits", 4, dict(DIGITS), stop_epoch=2)
    result = train(config, Recorder())
    assert result.decision is None and result.epochs_trained == 2
    assert result.test_metrics is None


def test_a_fused_group_scores_each_member_with_its_own_weights() -> None:
    base = {**SMALL, "norm": "batch", "dropout": 0.1, "test_fraction": 0.25}
    lrs = [1e-2, 3e-3, 2e-2]
    configs = [
        TrainConfig("cnn", "synthetic", 3, {**base, "lr": lr}, seed=seed)
        for seed, lr in enumerate(lrs)
    ]
    recorders = [Recorder() for _ in configs]
    recorders[1].decide = lambda epoch: Decision.PRUNE if epoch == 2 else Decision.CONTINUE
    results = train_group(
        configs, recorders, [r.checkpoint for r in recorders], dtype=torch.float64
    )
    assert results[1].decision is Decision.PRUNE and results[1].test_metrics is None
    scores = []
    for index in (0, 2):
        expected = _by_hand(_trained(configs[index], torch.float64))
        got = results[index].test_metrics
        assert got is not None
        assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-12)
        assert got["test_loss"] == pytest.approx(expected["test_loss"], rel=RELATIVE)
        scores.append(got["test_loss"])
    assert scores[0] != scores[1]  # each its own model, not the group's first


class OldCompleteRequest(Strict):
    """The completion body of a server older than the held-out score."""

    token: str
    lease: int = 0
    held: list[int] | None = None


def test_a_server_older_than_the_score_still_completes_the_trial() -> None:
    """A server whose completion body has no test_metrics (as before the score) refuses the
    field with 422; the worker completes the trial without it."""
    old_server = FastAPI()
    bodies: list[dict[str, Any]] = []

    @old_server.post("/api/v1/workers/{worker_id}/trials/{trial_id}/complete")
    def complete(worker_id: int, trial_id: int, body: OldCompleteRequest) -> dict[str, Any]:
        bodies.append(body.model_dump())
        return {"state": "completed", "assignments": []}

    client = WorkerClient("http://testserver", retry_seconds=0)
    client._http = TestClient(old_server)
    done = client.complete(1, 2, "t", test_metrics={"test_accuracy": 0.5, "test_loss": 0.7})
    assert done.state.value == "completed"
    assert bodies == [{"token": "t", "lease": 0, "held": None}]
