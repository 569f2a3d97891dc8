"""The cost metrics every trial reports, so that a multi-objective study can minimize them:
`train_seconds` (its epochs' time so far, across resumes) and `n_params` (its model's size)."""

from __future__ import annotations

from typing import Any

import pytest

from hpo.protocol import Decision
from tests.trainer.fused_support import Recorder
from trainer.fused.loop import train_group
from trainer.train import TrainConfig, build_run, train

# A checkpoint after every epoch (checkpoint_seconds 0): the tests resume from any of them.
PARAMS: dict[str, Any] = {
    "n_samples": 160,
    "batch_size": 32,
    "lr": 1e-2,
    "width": 32,
    "checkpoint_seconds": 0,
}


def _train(epochs: int, **overrides: Any) -> tuple[list[dict[str, float]], dict[int, bytes]]:
    curve: list[dict[str, float]] = []
    blobs: dict[int, bytes] = {}

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append(metrics)
        return Decision.CONTINUE

    params = {**PARAMS, **overrides.pop("params", {})}
    config = TrainConfig("mlp", "synthetic", epochs, params, **overrides)
    train(config, report, checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob))
    return curve, blobs


def test_train_seconds_sums_the_epochs_so_far() -> None:
    curve, _ = _train(3)
    total = 0.0
    for metrics in curve:
        total += metrics["epoch_seconds"]
        assert metrics["train_seconds"] == pytest.approx(total, rel=1e-9)
    assert 0 < curve[0]["train_seconds"] < curve[1]["train_seconds"] < curve[2]["train_seconds"]


def test_a_resumed_trial_counts_the_seconds_before_its_checkpoint() -> None:
    whole, blobs = _train(3)
    resumed, _ = _train(3, resume=blobs[2])
    before = whole[0]["epoch_seconds"] + whole[1]["epoch_seconds"]
    assert resumed[0]["train_seconds"] == pytest.approx(before + resumed[0]["epoch_seconds"])


@pytest.mark.parametrize("width", [16, 64])
def test_n_params_is_the_models_parameter_count(width: int) -> None:
    curve, _ = _train(1, params={"width": width})
    config = TrainConfig("mlp", "synthetic", 1, {**PARAMS, "width": width})
    model = build_run(config).model
    expected = sum(p.numel() for p in model.parameters())
    assert curve[0]["n_params"] == expected
    assert expected > 0


def test_fused_trials_report_their_own_costs() -> None:
    """Trials trained as one fused model each report their own model's size and their epochs'
    seconds (a resumed one counting its checkpoint's)."""
    configs = [TrainConfig("mlp", "synthetic", 2, {**PARAMS, "lr": lr}) for lr in (1e-2, 1e-3)]
    recorders = [Recorder() for _ in configs]
    results = train_group(configs, recorders, [r.checkpoint for r in recorders])
    assert all(not isinstance(r, BaseException) for r in results), results
    size = sum(p.numel() for p in build_run(configs[0]).model.parameters())
    for recorder in recorders:
        assert [m["n_params"] for m in recorder.curve] == [size, size]
        first, second = recorder.curve
        assert first["train_seconds"] == pytest.approx(first["epoch_seconds"])
        assert second["train_seconds"] == pytest.approx(
            first["epoch_seconds"] + second["epoch_seconds"]
        )
    # Resumed from epoch 1's fused checkpoint, alone: the seconds before it are counted.
    resumed, _ = _train(2, resume=recorders[0].blobs[1])
    expected = recorders[0].curve[0]["epoch_seconds"] + resumed[0]["epoch_seconds"]
    assert resumed[0]["train_seconds"] == pytest.approx(expected)
