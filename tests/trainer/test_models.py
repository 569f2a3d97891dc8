"""Models: input shapes they take, what they build, and refused parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.models import MODELS, build_model
from trainer.params import Params, TrainingError


@pytest.mark.parametrize(
    ("model", "shape", "conv"),
    [
        ("mlp", (1, 8, 8), None),
        ("cnn", (40,), nn.Conv1d),
        ("cnn", (3, 40), nn.Conv1d),
        ("cnn", (1, 8, 8), nn.Conv2d),
        ("resnet", (2, 16), nn.Conv1d),
        ("resnet", (3, 8, 8), nn.Conv2d),
    ],
)
def test_models_map_a_batch_of_samples_to_class_logits(
    model: str, shape: tuple[int, ...], conv: type | None
) -> None:
    net = build_model(model, shape, 7, Params({"channels": 8}))
    assert net(torch.randn(5, *shape)).shape == (5, 7)
    convs = {type(m) for m in net.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)}
    assert convs == ({conv} if conv else set())


def test_mlp_depth_and_width_set_its_hidden_layers() -> None:
    net = build_model("mlp", (10,), 3, Params({"depth": 3, "width": 17}))
    widths = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [17, 17, 17, 3]


def test_batch_norm_in_a_cnn_has_one_statistic_per_channel() -> None:
    net = build_model("cnn", (1, 8, 8), 3, Params({"norm": "batch", "channels": 12}))
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.num_features == 12 for m in norms)


def test_dropout_rate_is_applied() -> None:
    net = build_model("mlp", (10,), 3, Params({"dropout": 0.3}))
    rates = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.3, 0.3]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dropout": -0.1}, r"param 'dropout' must be >= 0.0, got -0.1"),
        ({"dropout": 1.0}, r"param 'dropout' must be < 1.0"),
        ({"width": 0}, r"param 'width' must be >= 1, got 0"),
        ({"depth": "two"}, r"param 'depth' must be an integer, got 'two'"),
    ],
)
def test_bad_values_are_refused_naming_the_param(params: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        build_model("mlp", (10,), 3, Params(params))


def test_an_even_kernel_size_is_refused() -> None:
    with pytest.raises(TrainingError, match=r"'kernel_size' must be odd"):
        build_model("cnn", (40,), 3, Params({"kernel_size": 4}))


def test_an_unknown_model_is_refused_with_the_choices() -> None:
    with pytest.raises(TrainingError, match=r"unknown model 'vit'; choose one of"):
        build_model("vit", (10,), 3, Params({}))
    assert set(MODELS) == {"mlp", "cnn", "resnet"}
