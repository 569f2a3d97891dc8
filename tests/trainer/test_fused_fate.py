"""Inside a fused group each trial's fate is its own: a decision, a NaN loss or a failing report
ends that member only while the rest go on with their own curves; checkpoints are the unfused
format, so a trial checkpointed in a group resumes alone (and the other way round) with the
curve it gets uninterrupted. Curves compare at 1e-6 relative (see fused_support.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from hpo.protocol import Decision
from tests.trainer.fused_support import SMALL, Recorder, alone, assert_same_curve, one_thread
from trainer.fused.loop import train_group
from trainer.params import TrainingError
from trainer.train import TrainConfig, TrainResult

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]  # the fixture, imported for pytest

F64 = torch.float64


def trials(n: int = 4, epochs: int = 4, **params: Any) -> list[TrainConfig]:
    base = {**SMALL, "norm": "batch", "dropout": 0.2, **params}
    lrs = [1e-2, 3e-3, 5e-3, 2e-2, 7e-3]
    return [
        TrainConfig("cnn", "synthetic", epochs, {**base, "lr": lrs[seed]}, seed=seed)
        for seed in range(n)
    ]


def fused(configs: list[TrainConfig], recorders: list[Recorder]) -> list[Any]:
    return train_group(configs, recorders, [r.checkpoint for r in recorders], dtype=F64)


@pytest.mark.parametrize("decision", [Decision.PRUNE, Decision.PAUSE, Decision.STOP])
def test_a_decision_ends_one_member_and_the_other_three_keep_their_curves(
    decision: Decision,
) -> None:
    configs = trials()
    recorders = [Recorder() for _ in configs]
    recorders[2].decide = lambda epoch: decision if epoch == 2 else Decision.CONTINUE
    results = fused(configs, recorders)
    # As trainer.train ends a trial: after the epoch whose answer ended it.
    assert results[2] == TrainResult(2, recorders[2].curve[-1], decision)
    assert recorders[2].epochs == [1, 2]
    assert_same_curve(recorders[2].curve, alone(configs[2]).curve[:2])
    for index in (0, 1, 3):
        assert results[index] == TrainResult(4, recorders[index].curve[-1], None)
        assert_same_curve(recorders[index].curve, alone(configs[index]).curve)


def test_a_nan_loss_fails_only_its_member() -> None:
    configs = trials(3, epochs=3, norm="none", optimizer="sgd")
    configs[1].params["lr"] = 1e12
    recorders = [Recorder() for _ in configs]
    results = fused(configs, recorders)
    assert isinstance(results[1], TrainingError)
    # trainer.train's message; the lr is the cosine schedule's at epoch 1's last step.
    assert str(results[1]) in (
        f"training loss became {what} at epoch 1 (lr 8.83e+11); try a smaller lr or set grad_clip"
        for what in ("NaN", "inf")
    )
    assert recorders[1].curve == []
    for index in (0, 2):
        assert results[index] == TrainResult(3, recorders[index].curve[-1], None)
        assert_same_curve(recorders[index].curve, alone(configs[index]).curve)


def test_a_failing_report_ends_only_its_member() -> None:
    configs = trials(3, epochs=3)
    recorders = [Recorder() for _ in configs]

    def unreachable(epoch: int) -> Decision:
        if epoch == 2:
            raise ConnectionError("server gone")
        return Decision.CONTINUE

    recorders[0].decide = unreachable
    results = fused(configs, recorders)
    assert isinstance(results[0], ConnectionError)
    for index in (1, 2):
        assert_same_curve(recorders[index].curve, alone(configs[index]).curve)


def test_a_trial_checkpointed_in_a_group_resumes_alone_with_its_uninterrupted_curve() -> None:
    configs = [dataclasses.replace(c, stop_epoch=2) for c in trials(3)]
    recorders = [Recorder() for _ in configs]
    results = fused(configs, recorders)
    assert [r.epochs_trained for r in results] == [2, 2, 2]
    for config, recorder in zip(configs, recorders, strict=True):
        resumed = alone(dataclasses.replace(config, stop_epoch=None, resume=recorder.blobs[2]))
        assert resumed.epochs == [3, 4]
        uninterrupted = alone(dataclasses.replace(config, stop_epoch=None)).curve
        assert_same_curve(recorder.curve + resumed.curve, uninterrupted)


def test_a_trial_checkpointed_alone_resumes_in_a_group_with_its_uninterrupted_curve() -> None:
    configs = trials(3)
    blob = alone(dataclasses.replace(configs[0], stop_epoch=2)).blobs[2]
    group = [dataclasses.replace(configs[0], resume=blob), configs[1], configs[2]]
    recorders = [Recorder() for _ in group]
    results = fused(group, recorders)
    # The resumed member trains epochs 3 and 4 beside two members at epochs 1 and 2.
    assert recorders[0].epochs == [3, 4] and recorders[1].epochs == [1, 2, 3, 4]
    assert results[0] == TrainResult(2, recorders[0].curve[-1], None)
    assert_same_curve(recorders[0].curve, alone(configs[0]).curve[2:])
    for index in (1, 2):
        assert_same_curve(recorders[index].curve, alone(configs[index]).curve)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_group_resumed_from_its_checkpoints_equals_the_uninterrupted_group(
    optimizer: str,
) -> None:
    configs = trials(3, optimizer=optimizer)
    whole = [Recorder() for _ in configs]
    fused(configs, whole)
    first = [Recorder() for _ in configs]
    fused([dataclasses.replace(c, stop_epoch=2) for c in configs], first)
    second = [Recorder() for _ in configs]
    resumed = [
        dataclasses.replace(c, resume=r.blobs[2]) for c, r in zip(configs, first, strict=True)
    ]
    fused(resumed, second)
    for everything, before, after in zip(whole, first, second, strict=True):
        assert after.epochs == [3, 4]
        assert_same_curve(before.curve + after.curve, everything.curve)


def test_the_last_epoch_takes_no_checkpoint_and_others_take_one_each() -> None:
    configs = trials(2, epochs=3, checkpoint_seconds=0)
    configs[1].params["checkpoint_every"] = 2
    recorders = [Recorder() for _ in configs]
    fused(configs, recorders)
    assert sorted(recorders[0].blobs) == [1, 2]
    assert sorted(recorders[1].blobs) == [2]
