"""The fused CNN's own layers (trainer.fused.layers, round 6): the channels-last packed layout,
1-D convolutions and pools run as 2-D ones of width 1, and a ReLU moved after the max-pool that
follows it. Each is checked against torch's unfused operation per trial in float64, forward and
backward, and whole fused trainings against the trials trained alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.trainer.fused_support import Recorder, alone, assert_same_curve, one_thread
from tests.trainer.test_fused import configs
from trainer.fused.layers import FusedPool1d, Streams, fuse
from trainer.fused.loop import train_group
from trainer.models import AddChannel
from trainer.norms import NORMS
from trainer.train import TrainResult

pytestmark = pytest.mark.usefixtures("one_thread")
__all__ = ["one_thread"]  # the fixture, imported for pytest

F64 = torch.float64


def unpack(y: torch.Tensor, k: int) -> torch.Tensor:
    """A packed 1-D activation (N, K*C, L), or widened (N, K*C, L, 1), as the trials' own
    (K, N, C, L)."""
    if y.dim() == 4:
        assert y.shape[-1] == 1
        y = y.squeeze(-1)
    n, channels, length = y.shape
    return y.reshape(n, k, channels // k, length).transpose(0, 1)


@pytest.mark.parametrize("widened", [True, False], ids=["with-max-pool", "without"])
@pytest.mark.parametrize(("kernel", "stride", "bias"), [(3, 1, True), (5, 2, False), (1, 2, True)])
def test_a_fused_1d_convolution_is_each_trials_conv1d_forward_and_backward(
    kernel: int, stride: int, bias: bool, widened: bool
) -> None:
    """A 1-D model with a max-pool (here of size 1, which passes everything on) holds its
    activations widened to 4-D and channels-last; one without stays 3-D: both convolve as
    F.conv1d does, trial by trial."""
    torch.manual_seed(0)
    models = []
    for _ in range(3):
        conv = nn.Conv1d(3, 4, kernel, stride, padding=kernel // 2, bias=bias).double()
        models.append(nn.Sequential(conv, nn.MaxPool1d(1)) if widened else nn.Sequential(conv))
    convs = [model[0] for model in models]
    fused = fuse(models, Streams([torch.Generator() for _ in convs]))
    x = torch.randn(3, 5, 3, 11, dtype=F64, requires_grad=True)
    out = fused(x)
    if widened:
        assert out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.dim() == 3 and out.is_contiguous()
    grad = torch.randn(out.shape, dtype=F64)
    out.backward(grad)
    per_trial = unpack(out, 3)
    for index, conv in enumerate(convs):
        mine = x[index].detach().requires_grad_()
        expected = F.conv1d(mine, conv.weight, conv.bias, stride, kernel // 2)
        torch.testing.assert_close(per_trial[index], expected, rtol=1e-12, atol=1e-12)
        expected.backward(unpack(grad, 3)[index])
        torch.testing.assert_close(x.grad[index], mine.grad, rtol=1e-12, atol=1e-12)
        assert conv.weight.grad is not None
        torch.testing.assert_close(
            fused.net[0].weight.grad[index], conv.weight.grad, rtol=1e-12, atol=1e-12
        )


def tied(shape: tuple[int, ...]) -> torch.Tensor:
    """Values with many ties (equal neighbours, zeros, equal negatives) and a NaN, where a
    max-pool's choice of element matters for its gradient."""
    values = torch.tensor([0.0, 0.0, -1.0, -1.0, 2.0, 2.0, 1.5, -3.0, 0.0, 4.0], dtype=F64)
    generator = torch.Generator().manual_seed(1)
    picks = torch.randint(len(values), shape, generator=generator)
    x = values[picks]
    x.view(-1)[7] = float("nan")
    return x


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool1d(2),
        nn.MaxPool1d(3, 2, padding=1),
        nn.MaxPool1d(2, ceil_mode=True),
        nn.AdaptiveAvgPool1d(1),
        nn.AdaptiveAvgPool1d(3),
    ],
    ids=["max2", "max3-stride2-pad1", "max2-ceil", "avg1", "avg3"],
)
def test_a_fused_1d_pool_is_torchs_to_the_bit_forward_and_backward(pool: nn.Module) -> None:
    """The 2-D pool of width 1 over (N, K*C, L, 1) picks the elements max_pool1d picks (the
    first on ties, a NaN where there is one), so values and gradients are equal exactly."""
    x = tied((4, 6, 11))  # (N, K*C, L), odd L: the last window is short or dropped
    packed = x.unsqueeze(-1).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = FusedPool1d(pool)(packed)
    plain = x.clone().requires_grad_()
    expected = pool(plain)
    torch.testing.assert_close(out.squeeze(-1), expected, rtol=0, atol=0, equal_nan=True)
    grad = torch.randn(expected.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    out.backward(grad.unsqueeze(-1))
    expected.backward(grad)
    assert packed.grad is not None and plain.grad is not None
    assert torch.equal(packed.grad.squeeze(-1), plain.grad)


def test_a_relu_before_a_max_pool_runs_after_it_with_the_same_outputs_and_gradients() -> None:
    """ReLU then max-pool (as every CNN block has them) is fused as max-pool then ReLU: the
    same values and input gradients to the bit, ties at zero and negative windows included."""
    models = []
    for _ in range(3):
        identity = nn.Conv1d(1, 1, 1, bias=False).double()  # a weight of 1: exact
        nn.init.ones_(identity.weight)
        models.append(
            nn.Sequential(AddChannel(), nn.ReLU(), nn.MaxPool1d(2), identity, nn.Flatten())
        )
    fused = fuse(models, Streams([torch.Generator() for _ in models]))
    kinds = [type(module).__name__ for module in fused.net]
    assert kinds == ["FusedAddChannel", "FusedPool1d", "ReLU", "FusedConv", "FusedFlatten"]
    assert list(fused.net.state_dict()) == ["3.weight"]
    x = tied((3, 5, 12)).nan_to_num(0.0).requires_grad_()
    out = fused(x)
    grad = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    out.backward(grad)
    for index, model in enumerate(models):
        mine = x[index].detach().requires_grad_()
        expected = model(mine)
        assert torch.equal(out[index], expected)
        expected.backward(grad[index])
        assert x.grad is not None and mine.grad is not None
        assert torch.equal(x.grad[index], mine.grad)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("model", "shape"), [("cnn", None), ("resnet", [2, 12])])
def test_a_fused_1d_trial_gives_the_curve_it_gives_alone(
    model: str, shape: list[int] | None, norm: str
) -> None:
    """The feature-vector CNN (MNIST-1D's layout: a one-channel sequence, AddChannel in front)
    and the 1-D ResNet (strided and 1x1 convolutions) with every norm, fused in float64: each
    trial's curve is its curve alone (tests/trainer/fused_support.py's tolerance)."""
    trials = configs(model, shape, norm, "adamw")
    recorders = [Recorder() for _ in trials]
    results = train_group(trials, recorders, [None] * len(trials), dtype=F64)
    for config, recorder, result in zip(trials, recorders, results, strict=True):
        assert result == TrainResult(2, recorder.curve[-1], None)
        assert_same_curve(recorder.curve, alone(config).curve)
    assert recorders[0].curve[-1]["train_loss"] != recorders[1].curve[-1]["train_loss"]
