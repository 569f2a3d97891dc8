"""The normalization factory: what each `norm` choice builds and how it normalizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.dropout import AlphaDropout, Dropout
from trainer.models import build_model
from trainer.norms import Norm
from trainer.params import Params, TrainingError


def stats_over(y: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return y.mean(dim=dims), y.var(dim=dims, unbiased=False)


def test_batch_norm_of_a_conv_normalizes_each_channel_over_the_batch() -> None:
    layer = Norm("batch").layer(4, dims=2).train()
    y = layer(torch.randn(8, 4, 5, 5) * 3 + 2)
    mean, var = stats_over(y, (0, 2, 3))
    assert mean.shape == (4,)
    assert torch.allclose(mean, torch.zeros(4), atol=1e-5)
    assert torch.allclose(var, torch.ones(4), atol=1e-3)


def test_layer_norm_of_a_conv_normalizes_each_sample_over_channels_and_positions() -> None:
    y = Norm("layer").layer(4, dims=2)(torch.randn(3, 4, 5, 5) * 3 + 2)
    mean, var = stats_over(y, (1, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(var, torch.ones(3), atol=1e-3)
    # Not per channel: single channels keep a mean away from 0.
    assert stats_over(y, (2, 3))[0].abs().max() > 0.05


def test_instance_norm_normalizes_each_sample_and_channel_over_positions() -> None:
    y = Norm("instance").layer(4, dims=1)(torch.randn(3, 4, 20) * 3 + 2)
    mean, var = stats_over(y, (2,))
    assert mean.shape == (3, 4)
    assert torch.allclose(mean, torch.zeros(3, 4), atol=1e-5)
    assert torch.allclose(var, torch.ones(3, 4), atol=1e-3)


def test_group_norm_normalizes_groups_of_channels() -> None:
    y = Norm("group", groups=2).layer(4, dims=1)(torch.randn(3, 4, 20) * 3 + 2)
    grouped = y.reshape(3, 2, 2 * 20)
    assert torch.allclose(grouped.mean(dim=2), torch.zeros(3, 2), atol=1e-5)


def test_groups_that_do_not_divide_the_channels_are_refused() -> None:
    with pytest.raises(TrainingError, match=r"groups=6 does not divide 32 channels"):
        build_model("cnn", (1, 8, 8), 4, Params({"norm": "group", "groups": 6, "channels": 32}))


def test_batch_norm_in_eval_mode_uses_running_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 3, Params({"norm": "batch", "channels": 8}))
    model.train()
    for _ in range(5):  # gather running statistics
        model(torch.randn(16, 1, 8, 8))
    sample = torch.randn(1, 1, 8, 8)
    first, second = torch.randn(7, 1, 8, 8), torch.randn(7, 1, 8, 8) * 5
    model.eval()
    in_first = model(torch.cat([sample, first]))[0]
    in_second = model(torch.cat([sample, second]))[0]
    assert torch.allclose(in_first, in_second, atol=1e-6)
    model.train()  # batch statistics: the same sample's output depends on its batch
    assert not torch.allclose(model(torch.cat([sample, first]))[0], in_first, atol=1e-3)


def test_selu_uses_selu_alpha_dropout_and_lecun_normal_init() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (400,), 3, Params({"norm": "selu", "dropout": 0.1, "width": 300}))
    kinds = {type(m) for m in model.modules()}
    assert nn.SELU in kinds and AlphaDropout in kinds
    assert nn.ReLU not in kinds and Dropout not in kinds
    first = model[1]
    assert isinstance(first, nn.Linear)
    assert first.weight.std().item() == pytest.approx(1 / 400**0.5, rel=0.05)
    assert torch.count_nonzero(first.bias) == 0


def test_weight_norm_reparametrizes_every_weight_layer_and_adds_no_norm_layer() -> None:
    model = build_model("resnet", (1, 8, 8), 3, Params({"norm": "weight", "channels": 8}))
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    assert layers
    assert all(hasattr(m, "parametrizations") for m in layers)
    norms = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
    assert not any(isinstance(m, norms) for m in model.modules())


def test_an_unknown_norm_is_refused_naming_the_param() -> None:
    with pytest.raises(TrainingError, match=r"param 'norm' must be one of .*'batch'.*got 'bn'"):
        build_model("mlp", (4,), 2, Params({"norm": "bn"}))


@pytest.mark.parametrize(
    ("kind", "dims", "cancelled"),
    [
        ("batch", 0, True),
        ("batch", 1, True),
        ("instance", 1, True),
        ("instance", 0, False),  # an MLP's instance norm is layer norm
        ("layer", 0, False),
        ("layer", 1, False),
        ("group", 1, False),
    ],
)
def test_a_bias_before_the_norm_is_dropped_exactly_where_the_norm_cancels_it(
    kind: str, dims: int, cancelled: bool
) -> None:
    torch.manual_seed(0)
    norm = Norm(kind, groups=2)
    layer = norm.linear(6, 4) if dims == 0 else norm.conv(dims, 6, 4, 3)
    assert (layer.bias is None) == cancelled
    # what the norm does to a per-channel constant (a bias) added before it
    after = norm.layer(4, dims).train()
    x = torch.randn(5, 4) if dims == 0 else torch.randn(5, 4, 10)
    shift = torch.tensor([0.0, 1.0, -2.0, 3.0]).reshape((1, 4) + (1,) * dims)
    same = torch.allclose(after(x), after(x + shift), atol=1e-5)
    assert same == cancelled


def test_selu_keeps_a_deep_mlp_near_mean_0_and_variance_1() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 3, Params({"norm": "selu", "depth": 16, "width": 256}))
    hidden = model[:-1]  # every hidden layer, without the classifier
    with torch.no_grad():
        out = hidden(torch.randn(2048, 64))
    assert abs(out.mean().item()) < 0.1
    assert 0.8 < out.var().item() < 1.2
