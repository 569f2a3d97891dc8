"""Checkpoints on a time cadence (`checkpoint_seconds`): of the epochs `checkpoint_every`
selects, only those that end at least that many seconds of training after the trial's last
checkpoint (or its start, or its resumption) take one; a rung's end always does, the last
epoch never, and once the worker is leaving every epoch does. The unfused loop and each member
of a fused group decide alike, on their own seconds.

The epochs' seconds are set by hand: the loops' clock (`time.perf_counter` in trainer.train and
trainer.fused.loop) stands still, and every epoch advances it by `EPOCH` seconds, so a trial's
epoch_seconds are exactly what the test says and the chosen epochs do not depend on the load."""

from __future__ import annotations

import dataclasses
import threading
import types
from typing import Any

import pytest

import trainer.fused.loop as fused_loop
import trainer.train as train_module
from tests.trainer.fused_support import Recorder
from trainer.fused.loop import train_group
from trainer.params import TrainingError
from trainer.train import TrainConfig, train

EPOCH = 1.0  # seconds of training each epoch takes, by the hand-set clock
SMALL = {"n_samples": 128, "batch_size": 32, "width": 16, "depth": 1, "lr": 1e-2}


class Clock:
    """A perf_counter that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Both loops' clock, with each epoch (unfused, or of a whole group) taking EPOCH."""
    hand = Clock()
    fake_time = types.SimpleNamespace(perf_counter=hand.perf_counter)
    monkeypatch.setattr(train_module, "time", fake_time)
    monkeypatch.setattr(fused_loop, "time", fake_time)
    unfused_epoch, fused_epoch = train_module.train_epoch, fused_loop._train_epoch

    def one_epoch(*args: Any, **kwargs: Any) -> Any:
        result = unfused_epoch(*args, **kwargs)
        hand.now += EPOCH
        return result

    def group_epoch(group: Any) -> Any:
        losses, lrs, seconds = fused_epoch(group)
        return losses, lrs, seconds + EPOCH  # its own clock stood still: seconds is 0

    monkeypatch.setattr(train_module, "train_epoch", one_epoch)
    monkeypatch.setattr(fused_loop, "_train_epoch", group_epoch)
    return hand


def config(epochs: int = 6, seed: int = 0, **params: Any) -> TrainConfig:
    return TrainConfig("mlp", "synthetic", epochs, {**SMALL, **params}, seed=seed)


def alone(cfg: TrainConfig) -> Recorder:
    recorder = Recorder()
    train(cfg, recorder, checkpoint=recorder.checkpoint)
    return recorder


def fused(configs: list[TrainConfig]) -> list[Recorder]:
    recorders = [Recorder() for _ in configs]
    results = train_group(configs, recorders, [r.checkpoint for r in recorders])
    assert all(not isinstance(r, BaseException) for r in results), results
    return recorders


# (params, stop_epoch, the epochs checkpointed), 6 epochs of EPOCH = 1 s each.
CASES = [
    ({"checkpoint_seconds": 0}, None, [1, 2, 3, 4, 5]),  # the old behaviour; never the last
    ({"checkpoint_seconds": 2.5}, None, [3]),  # 3 s by epoch 3; 2 s more by 5: too few
    ({"checkpoint_seconds": 2}, None, [2, 4]),
    ({"checkpoint_seconds": 3, "checkpoint_every": 2}, None, [4]),  # epoch 2: 2 s only
    ({"checkpoint_seconds": 0, "checkpoint_every": 2}, None, [2, 4]),
    ({}, None, []),  # the default, 10 s: these 6 s end with the trial, nothing to resume
    ({"checkpoint_seconds": 1e6}, 4, [4]),  # a rung's end, whatever the cadence
    ({"checkpoint_seconds": 2.5}, 4, [3, 4]),
]


@pytest.mark.parametrize(("params", "stop", "expected"), CASES)
def test_an_unfused_trial_checkpoints_on_its_cadence(
    clock: Clock, params: dict[str, Any], stop: int | None, expected: list[int]
) -> None:
    recorder = alone(dataclasses.replace(config(**params), stop_epoch=stop))
    assert [m["epoch_seconds"] for m in recorder.curve] == [EPOCH] * (stop or 6)
    assert sorted(recorder.blobs) == expected


def test_each_member_of_a_fused_group_checkpoints_on_its_own_cadence_as_alone(
    clock: Clock,
) -> None:
    configs = [
        dataclasses.replace(config(seed=seed, **params), stop_epoch=stop)
        for seed, (params, stop, _) in enumerate(CASES)
    ]
    recorders = fused(configs)
    for recorder, (params, stop, expected) in zip(recorders, CASES, strict=True):
        assert [m["epoch_seconds"] for m in recorder.curve] == [EPOCH] * (stop or 6), params
        assert sorted(recorder.blobs) == expected, (params, stop)


def test_a_resumed_trial_counts_its_seconds_from_its_checkpoint(clock: Clock) -> None:
    first = alone(dataclasses.replace(config(checkpoint_seconds=1e6), stop_epoch=2))
    assert sorted(first.blobs) == [2]
    # train_seconds carries 2 s from before the checkpoint; the cadence starts again at 0.
    cfg = dataclasses.replace(config(checkpoint_seconds=2.5), resume=first.blobs[2])
    resumed = alone(cfg)
    assert resumed.epochs == [3, 4, 5, 6] and sorted(resumed.blobs) == [5]
    assert resumed.curve[0]["train_seconds"] == 3 * EPOCH
    # The same checkpoint resumed in a group, beside a member that starts afresh.
    group = fused([cfg, config(seed=1, checkpoint_seconds=2.5)])
    assert group[0].epochs == [3, 4, 5, 6] and sorted(group[0].blobs) == [5]
    assert group[1].epochs == [1, 2, 3, 4, 5, 6] and sorted(group[1].blobs) == [3]


def _leaving_during_epoch_3(monkeypatch: pytest.MonkeyPatch, leaving: threading.Event) -> None:
    """The worker is told to stop (SIGTERM) while epoch 3 trains."""
    unfused_epoch, fused_epoch = train_module.train_epoch, fused_loop._train_epoch

    def one_epoch(run: Any, epoch: int, *rest: Any) -> Any:
        if epoch == 3:
            leaving.set()
        return unfused_epoch(run, epoch, *rest)

    def group_epoch(group: Any) -> Any:
        if group.members[0].done + 1 == 3:
            leaving.set()
        return fused_epoch(group)

    monkeypatch.setattr(train_module, "train_epoch", one_epoch)
    monkeypatch.setattr(fused_loop, "_train_epoch", group_epoch)


@pytest.mark.parametrize("how", ["alone", "fused"])
def test_a_leaving_worker_checkpoints_every_epoch_that_ends_whatever_the_cadence(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    leaving = threading.Event()
    _leaving_during_epoch_3(monkeypatch, leaving)
    cfg = dataclasses.replace(config(checkpoint_seconds=1e6), leaving=leaving)
    pair = [cfg, dataclasses.replace(cfg, seed=1)]
    recorders = [alone(cfg)] if how == "alone" else fused(pair)
    for recorder in recorders:
        # The worker hands the trial back after the epoch it was told during (its answer is
        # `stop`; this recorder says `continue`): every epoch from 3 on has its checkpoint.
        assert sorted(recorder.blobs) == [3, 4, 5]


@pytest.mark.parametrize(
    ("value", "words"),
    [(-1, "must be >= 0.0, got -1"), ("soon", "must be a number, got 'soon'")],
)
def test_the_trainer_refuses_a_bad_checkpoint_seconds(value: Any, words: str) -> None:
    with pytest.raises(TrainingError, match=f"param 'checkpoint_seconds' {words}"):
        train(config(checkpoint_seconds=value), Recorder())


def test_trials_differing_in_their_cadence_share_a_fused_group() -> None:
    from trainer.fused.grouping import fuse_key

    keys = {
        fuse_key(config(seed=seed, **params))
        for seed, params in enumerate(
            [{}, {"checkpoint_seconds": 0}, {"checkpoint_seconds": 30, "checkpoint_every": 3}]
        )
    }
    assert len(keys) == 1 and None not in keys
