"""The training loop: reports, decisions, reproducibility, failures, optimizer and schedule."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import nn

from hpo.protocol import Decision
from trainer.norms import NORMS
from trainer.optim import LoopParams
from trainer.params import Params
from trainer.train import (
    TrainConfig,
    TrainingError,
    TrainResult,
    batch_bounds,
    build_run,
    evaluate,
    train,
    warm_up,
)

SMALL = {"n_samples": 160, "batch_size": 32, "lr": 1e-2, "channels": 8, "width": 32}
METRICS = {"train_loss", "val_loss", "val_accuracy", "lr", "epoch_seconds", "samples_per_second"}


class Recorder:
    """A report callback that records the curve and answers `decide(epoch)`."""

    def __init__(self, decide: Any = lambda epoch: Decision.CONTINUE) -> None:
        self.curve: list[dict[str, float]] = []
        self.decide = decide

    def __call__(self, epoch: int, metrics: dict[str, float]) -> Decision:
        assert epoch == len(self.curve) + 1
        self.curve.append(metrics)
        return self.decide(epoch)


def run(model: str = "mlp", epochs: int = 2, seed: int = 0, **params: Any) -> Recorder:
    recorder = Recorder()
    config = TrainConfig(model, "synthetic", epochs, {**SMALL, **params}, seed=seed)
    result = train(config, recorder)
    assert result.epochs_trained == epochs and result.decision is None
    return recorder


CASES = [
    ("mlp", None),
    ("cnn", None),  # 1-D over the feature vector
    ("cnn", [1, 8, 8]),
    ("resnet", [1, 8, 8]),
    ("resnet", [2, 12]),
]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("model", "shape"), CASES)
def test_every_norm_in_every_model_trains_and_the_loss_falls(
    model: str, shape: list[int] | None, norm: str
) -> None:
    extra = {"shape": shape} if shape else {}
    curve = run(model, norm=norm, **extra).curve
    assert set(curve[0]) >= METRICS
    assert curve[1]["train_loss"] < curve[0]["train_loss"]


def test_metrics_are_per_epoch_figures_of_the_run() -> None:
    curve = run(epochs=3, n_samples=400).curve
    for metrics in curve:
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
        assert metrics["epoch_seconds"] > 0 and metrics["samples_per_second"] > 0
    assert curve[-1]["val_accuracy"] > 0.5  # 4 classes: well above chance


def test_same_seed_and_params_give_an_identical_curve() -> None:
    def curve(seed: int) -> list[dict[str, float]]:
        points = run("cnn", epochs=3, seed=seed, norm="batch", dropout=0.2).curve
        timings = ("epoch_seconds", "samples_per_second", "train_seconds")
        return [{k: v for k, v in m.items() if k not in timings} for m in points]

    assert curve(1) == curve(1)
    assert curve(1) != curve(2)


@pytest.mark.parametrize("lr", [1e6, 1e12])
def test_a_diverging_loss_fails_the_trial_with_nan_or_inf(lr: float) -> None:
    with pytest.raises(TrainingError, match=r"loss became (NaN|inf) at epoch \d+") as caught:
        run(epochs=3, optimizer="sgd", lr=lr, momentum=0.0)
    assert "lr" in str(caught.value)


@pytest.mark.parametrize("decision", [Decision.PRUNE, Decision.PAUSE, Decision.STOP])
def test_a_decision_that_ends_training_returns_after_that_epoch(decision: Decision) -> None:
    recorder = Recorder(lambda epoch: decision if epoch == 2 else Decision.CONTINUE)
    result = train(TrainConfig("mlp", "synthetic", 5, dict(SMALL)), recorder)
    assert result == TrainResult(2, recorder.curve[-1], decision)
    assert len(recorder.curve) == 2


def test_a_plain_string_decision_is_understood() -> None:
    recorder = Recorder(lambda epoch: "prune")
    result = train(TrainConfig("mlp", "synthetic", 3, dict(SMALL)), recorder)
    assert (result.epochs_trained, result.decision) == (1, Decision.PRUNE)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("norm", ["batch", "layer", "weight"])
def test_weight_decay_applies_to_layer_weights_only(optimizer: str, norm: str) -> None:
    params = {**SMALL, "optimizer": optimizer, "norm": norm, "weight_decay": 0.01}
    run_ = build_run(TrainConfig("cnn", "synthetic", 1, {**params, "shape": [1, 8, 8]}))
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in run_.optimizer.param_groups}
    assert set(groups) == {0.01, 0.0}
    layers = [m for m in run_.model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    expected = set()
    for layer in layers:
        if norm == "weight":  # the direction v decays; the magnitude g does not
            expected.add(id(layer.parametrizations.weight.original1))
            assert id(layer.parametrizations.weight.original0) in groups[0.0]
        else:
            expected.add(id(layer.weight))
        if layer.bias is not None:
            assert id(layer.bias) in groups[0.0]
    assert groups[0.01] == expected
    norm_params = [
        id(p)
        for m in run_.model.modules()
        if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)
        for p in m.parameters()
    ]
    assert set(norm_params) <= groups[0.0]
    assert len(norm_params) > 0 or norm == "weight"


def test_sgd_takes_momentum_and_nesterov() -> None:
    run_ = build_run(
        TrainConfig(
            "mlp", "synthetic", 1, {**SMALL, "optimizer": "sgd", "momentum": 0.8, "nesterov": True}
        )
    )
    assert isinstance(run_.optimizer, torch.optim.SGD)
    assert run_.optimizer.defaults["momentum"] == 0.8 and run_.optimizer.defaults["nesterov"]


def test_adamw_takes_beta1_and_beta2_and_sgd_leaves_them_unused() -> None:
    config = TrainConfig("mlp", "synthetic", 1, {**SMALL, "beta1": 0.8, "beta2": 0.95})
    assert build_run(config).optimizer.defaults["betas"] == (0.8, 0.95)
    params = Params({"optimizer": "sgd", "beta1": 0.8})
    LoopParams.from_params(params)
    assert params.unused() == ["beta1"]


def test_lr_warms_up_then_decays_by_cosine_to_zero() -> None:
    lrs = [m["lr"] for m in run(epochs=4, warmup_epochs=1, lr=0.1).curve]
    assert lrs[0] == pytest.approx(0.1)  # end of warm-up
    assert lrs[1] > lrs[2] > lrs[3]
    assert lrs[3] < 0.01
    constant = [m["lr"] for m in run(epochs=3, lr=0.1, lr_schedule="constant").curve]
    assert constant == [0.1, 0.1, 0.1]


def test_gradient_clipping_keeps_a_large_lr_finite() -> None:
    with pytest.raises(TrainingError):
        run(epochs=2, optimizer="sgd", lr=50.0, momentum=0.0)
    assert len(run(epochs=2, optimizer="sgd", lr=50.0, momentum=0.0, grad_clip=1e-3).curve) == 2


def test_batch_norm_with_batch_size_1_is_refused() -> None:
    with pytest.raises(TrainingError, match=r"norm 'batch' needs at least 2 samples per batch"):
        run(norm="batch", batch_size=1)
    assert len(run(norm="layer", batch_size=1, n_samples=40).curve) == 2


def test_a_last_batch_of_one_sample_is_folded_into_the_previous_one() -> None:
    assert batch_bounds(65, 32, "batch") == [(0, 32), (32, 65)]
    assert batch_bounds(64, 32, "none") == [(0, 32), (32, 64)]
    # 160 samples: 112 train; batch_size 111 would leave a batch of one for BatchNorm1d.
    assert len(run(norm="batch", batch_size=111).curve) == 2


def test_validation_loss_does_not_depend_on_batching_in_eval_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_ = build_run(
        TrainConfig("cnn", "synthetic", 1, {**SMALL, "norm": "batch", "shape": [1, 8, 8]})
    )
    x, y = run_.data.x_val, run_.data.y_val
    run_.model.train()
    whole = evaluate(run_.model, x, y)
    assert not run_.model.training
    monkeypatch.setattr("trainer.train.EVAL_BATCH_SIZE", 3)
    assert evaluate(run_.model, x, y) == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"optimizer": "adam"}, r"param 'optimizer' must be one of \['adamw', 'sgd'\]"),
        ({"lr": -0.1}, r"param 'lr' must be > 0.0, got -0.1"),
        ({"batch_size": 0}, r"param 'batch_size' must be >= 1, got 0"),
        ({"weight_decay": -1}, r"param 'weight_decay' must be >= 0.0"),
        ({"grad_clip": 0}, r"param 'grad_clip' must be > 0.0"),
        ({"optimizer": "sgd", "momentum": 0, "nesterov": True}, r"'nesterov' needs .*'momentum'"),
        ({"lr_schedule": "step"}, r"param 'lr_schedule' must be one of"),
    ],
)
def test_bad_loop_params_are_refused_naming_the_param(params: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        run(**params)


def test_unknown_model_dataset_or_device_are_refused() -> None:
    with pytest.raises(TrainingError, match=r"unknown model 'transformer'"):
        train(TrainConfig("transformer", "synthetic", 1, {}), Recorder())
    with pytest.raises(TrainingError, match=r"unknown dataset 'imagenet'"):
        train(TrainConfig("mlp", "imagenet", 1, {}), Recorder())
    with pytest.raises(TrainingError, match=r"device 'cuda:7' is not available"):
        train(TrainConfig("mlp", "synthetic", 1, {}, device="cuda:7"), Recorder())


def test_params_nothing_reads_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainer.train"):
        run(learning_rate=0.1)
    assert "params not used by the trainer: " in caplog.text
    assert "learning_rate" in caplog.text


def test_from_assignment_merges_workload_and_sampled_params() -> None:
    workload = {"model": "cnn", "dataset": "mnist1d", "optimizer": "sgd", "lr": 0.01, "seed": 3}
    config = TrainConfig.from_assignment(workload, {"lr": 0.2, "norm": "batch"}, 7, "cpu")
    assert config == TrainConfig(
        "cnn", "mnist1d", 7, {"optimizer": "sgd", "lr": 0.2, "norm": "batch"}, 3, "cpu"
    )
    with pytest.raises(TrainingError, match=r"workload needs 'dataset'"):
        TrainConfig.from_assignment({"model": "mlp"}, {}, 1, "cpu")


def test_cuda_out_of_memory_fails_the_trial_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("trainer.train.train_epoch", out_of_memory)
    with pytest.raises(TrainingError, match=r"CUDA out of memory.*2.00 GiB.*smaller batch_size"):
        run()


WARM_THEN_TRAIN = """
import sys
from trainer.train import TrainConfig, train, warm_up
warm_up("cpu")
before = set(sys.modules)
config = TrainConfig("mlp", "synthetic", 1, {"n_samples": 64, "optimizer": "sgd"}, seed=0)
train(config, lambda epoch, metrics: "continue")
print(sorted(m for m in set(sys.modules) - before if m.startswith("torch")))
"""


def test_after_warm_up_a_first_trial_loads_no_more_of_pytorch() -> None:
    # Without the warm-up the first optimizer imports torch._dynamo inside the first trial,
    # about 1.5 s of a worker's time that would count against every short study.
    out = subprocess.run(
        [sys.executable, "-c", WARM_THEN_TRAIN], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_warm_up_refuses_an_unusable_device() -> None:
    with pytest.raises(TrainingError, match="not available"):
        warm_up("cuda:99")
