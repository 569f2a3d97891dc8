"""Fused training gives every trial the curve it gets alone (see tests/trainer/fused_support.py
for the float64 reference and the 1e-6 relative tolerance), for every model x norm x optimizer;
fusing and unfusing keep each trial's state dict; and which trials can share a group."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.trainer.fused_support import SMALL, Recorder, alone, assert_same_curve, one_thread
from trainer.fused.grouping import fuse_key, group_indices
from trainer.fused.layers import NotFusable, Streams, fuse, member_state
from trainer.fused.loop import train_group
from trainer.fused.optim import FusedOptimizer
from trainer.models import build_model
from trainer.norms import NORMS
from trainer.optim import LoopParams, decayed_weights
from trainer.params import Params
from trainer.train import TrainConfig, TrainResult, build_run

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]  # the fixture, imported for pytest

CASES = [
    ("mlp", None),
    ("cnn", [2, 12]),  # 1-D, with channels
    ("cnn", [1, 8, 8]),
    ("resnet", [1, 8, 8]),
]
# Fusing and unfusing also for the other input layouts: a feature vector read as a sequence.
LAYOUTS = [*CASES, ("cnn", None), ("resnet", [2, 12]), ("mlp", [2, 12])]

# Per-trial settings a group keeps apart: lr, schedule, warm-up, weight decay, dropout rate,
# clipping, momentum and nesterov (SGD), beta1 and beta2 (AdamW).
TRIALS: list[dict[str, Any]] = [
    {"lr": 1e-2, "dropout": 0.1, "weight_decay": 1e-2, "momentum": 0.9, "nesterov": True},
    {"lr": 3e-3, "dropout": 0.3, "grad_clip": 0.5, "momentum": 0.5, "lr_schedule": "constant"},
    {"lr": 5e-3, "dropout": 0.2, "weight_decay": 1e-3, "momentum": 0.0, "warmup_epochs": 1.0},
]
BETAS: list[dict[str, Any]] = [
    {"beta1": 0.8, "beta2": 0.99},
    {"beta1": 0.95, "beta2": 0.9},
    {},  # the defaults, 0.9 and 0.999
]


def configs(model: str, shape: list[int] | None, norm: str, optimizer: str) -> list[TrainConfig]:
    base: dict[str, Any] = {**SMALL, "norm": norm, "optimizer": optimizer, "groups": 4}
    if shape is not None:
        base["shape"] = shape
    result = []
    for seed, (trial, betas) in enumerate(zip(TRIALS, BETAS, strict=True)):
        params = {**base, **trial}
        if optimizer == "adamw":
            params.pop("momentum")
            params.pop("nesterov", None)
            params.update(betas)
        result.append(TrainConfig(model, "synthetic", 2, params, seed=seed))
    return result


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("model", "shape"), CASES)
def test_a_fused_trial_gives_the_curve_it_gives_alone(
    model: str, shape: list[int] | None, norm: str, optimizer: str
) -> None:
    trials = configs(model, shape, norm, optimizer)
    recorders = [Recorder() for _ in trials]
    results = train_group(trials, recorders, [None] * len(trials), dtype=torch.float64)
    for config, recorder, result in zip(trials, recorders, results, strict=True):
        assert result == TrainResult(2, recorder.curve[-1], None)
        assert_same_curve(recorder.curve, alone(config).curve)
    # Different settings give different curves: the comparison can tell trials apart.
    assert recorders[0].curve[-1]["train_loss"] != recorders[1].curve[-1]["train_loss"]


def test_float32_fused_training_follows_the_float32_loop() -> None:
    """In float32 (how the worker trains) rounding differs more; after 2 epochs the curves
    still agree to 1e-4 relative."""
    trials = configs("cnn", [1, 8, 8], "batch", "adamw")
    recorders = [Recorder() for _ in trials]
    train_group(trials, recorders, [None] * len(trials))
    for config, recorder in zip(trials, recorders, strict=True):
        expected = alone(config, torch.float32).curve
        for mine, theirs in zip(recorder.curve, expected, strict=True):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("model", "shape"), LAYOUTS)
def test_fusing_keeps_each_trials_state_dict_and_outputs(
    model: str, shape: list[int] | None, norm: str
) -> None:
    sample = tuple(shape) if shape is not None else (20,)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        params = Params({"norm": norm, "groups": 4, "dropout": 0.2, "channels": 8, "width": 16})
        models.append(build_model(model, sample, 4, params).double())
    fused = fuse(models, Streams([torch.Generator() for _ in models]))
    x = torch.randn(3, 5, *sample, dtype=torch.float64)
    fused.eval()
    out = fused(x)
    for index, single in enumerate(models):
        state = member_state(fused, index)
        assert state.keys() == single.state_dict().keys()
        for key, value in single.state_dict().items():
            assert torch.equal(state[key], value), key
        single.eval()
        torch.testing.assert_close(out[index], single(x[index]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_fused_step_is_each_trials_unfused_step_to_the_bit(optimizer: str) -> None:
    """In float32, as the worker trains: given the same gradients, the fused optimizer moves
    each trial's weights exactly as the trial's own `fused=True` optimizer does (AdamW's
    decoupled weight decay applied before the kernel, a linear weight stored transposed), and
    the state dicts it gives back are ordinary contiguous tensors."""
    trials = configs("mlp", None, "batch", optimizer)
    runs = [build_run(config) for config in trials]
    fused = fuse([run.model for run in runs], Streams([torch.Generator() for _ in runs]))
    names = {id(p): name for name, p in runs[0].model.named_parameters()}
    decayed = {names[id(p)] for p in decayed_weights(runs[0].model)}
    loops = [LoopParams.from_params(Params(config.params)) for config in trials]
    optimizer_ = FusedOptimizer(fused.net, loops, decayed)
    noise = torch.Generator().manual_seed(0)
    for step in range(3):
        lrs = [0.05 / (step + 1 + index) for index in range(len(runs))]
        for name, param in fused.net.named_parameters():
            grad = torch.randn(param.shape, generator=noise)
            param.grad = grad
            for index, run in enumerate(runs):
                run.model.get_parameter(name).grad = grad[index].clone()
        optimizer_.step(lrs)
        for run, lr in zip(runs, lrs, strict=True):
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            run.optimizer.step()
    for index, run in enumerate(runs):
        state = member_state(fused, index)
        for key, value in run.model.state_dict().items():
            assert torch.equal(state[key], value), key
            assert state[key].is_contiguous(), key
        own = run.optimizer.state_dict()["state"]
        mine = optimizer_.trial_state(index, run.model)["state"]
        for number, values in own.items():
            for key, value in values.items():
                assert torch.equal(mine[number][key], value), (number, key)
                assert mine[number][key].is_contiguous(), (number, key)


def test_models_of_different_shapes_are_not_fused() -> None:
    models = [build_model("mlp", (20,), 4, Params({"width": width})) for width in (16, 32)]
    with pytest.raises(NotFusable):
        fuse(models, Streams([torch.Generator() for _ in models]))


def test_a_bad_param_fails_only_its_trial() -> None:
    trials = configs("mlp", None, "batch", "adamw")
    trials[1].params["dropout"] = 1.5
    recorders = [Recorder() for _ in trials]
    results = train_group(trials, recorders, [None] * 3, dtype=torch.float64)
    assert "param 'dropout' must be < 1.0, got 1.5" in str(results[1])
    assert recorders[1].curve == []
    assert_same_curve(recorders[2].curve, alone(trials[2]).curve)


def key_of(model: str = "mlp", seed: int = 0, **params: Any) -> object:
    return fuse_key(TrainConfig(model, "digits", 3, {"batch_size": 64, **params}, seed=seed))


def test_trials_differing_in_per_trial_settings_share_a_key() -> None:
    first = key_of(lr=0.1, dropout=0.1, weight_decay=0.0, seed=1)
    assert first == key_of(lr=0.001, dropout=0.4, weight_decay=0.01, grad_clip=1.0, seed=7)
    assert first == key_of(lr=0.1, dropout=0.1, weight_decay=0.0, beta1=0.5, beta2=0.9, seed=1)


def test_trials_differing_only_in_betas_train_fused_with_their_own() -> None:
    """Same seed, lr and everything else: only AdamW's betas tell the curves apart."""
    base = {**SMALL, "norm": "batch", "lr": 1e-2}
    trials = [
        TrainConfig("mlp", "synthetic", 2, {**base, **betas}, seed=0)
        for betas in ({"beta1": 0.5, "beta2": 0.9}, {}, {"beta1": 0.99, "beta2": 0.5})
    ]
    recorders = [Recorder() for _ in trials]
    train_group(trials, recorders, [None] * len(trials), dtype=torch.float64)
    for config, recorder in zip(trials, recorders, strict=True):
        assert_same_curve(recorder.curve, alone(config).curve)
    losses = {recorder.curve[-1]["train_loss"] for recorder in recorders}
    assert len(losses) == 3


@pytest.mark.parametrize(
    "other",
    [
        {"batch_size": 32},
        {"norm": "batch"},
        {"dropout": 0.0},  # no dropout layers at all
        {"optimizer": "sgd"},
        {"width": 64},
    ],
)
def test_trials_differing_in_shapes_or_batches_do_not(other: dict[str, Any]) -> None:
    assert key_of(dropout=0.1) != key_of(**{"dropout": 0.1, **other})


def test_groups_are_formed_per_key_up_to_the_size() -> None:
    trials = [
        TrainConfig("mlp", "digits", 3, {"batch_size": size, "lr": lr})
        for size, lr in [(64, 0.1), (32, 0.1), (64, 0.2), (64, 0.3), (32, 0.4)]
    ]
    trials.append(TrainConfig("not-a-builtin", "digits", 3, {}))
    assert group_indices(trials, 2) == [[0, 2], [1, 4], [3], [5]]
    assert fuse_key(trials[5]) is None
