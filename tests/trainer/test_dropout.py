"""trainer.dropout: the masks the unfused layers draw, the fused layer draws alike for every
trial at once; they keep and scale at the stated rate."""

from __future__ import annotations

import pytest
import torch

from trainer import dropout
from trainer.dropout import AlphaDropout, Dropout
from trainer.fused.layers import PACKED, TRIAL, FusedDropout, NotFusable, Streams, fuse
from trainer.models import build_model
from trainer.params import Params

RATES = [0.1, 0.37, 0.37]


def alone(layer: torch.nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output on x with the global generator seeded `seed`, and the generator's
    state after it."""
    torch.manual_seed(seed)
    layer.train()
    return layer(x), torch.get_rng_state()


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_fused_layer_gives_each_trial_the_output_and_generator_state_it_gets_alone(
    alpha: bool, dtype: torch.dtype
) -> None:
    k = len(RATES)
    # One input for all; an odd element count per trial: the last word is only partly used.
    x = torch.randn(1, 7, 9, dtype=dtype).expand(k, 7, 9).contiguous()
    generators = [torch.Generator().manual_seed(10 + index) for index in range(k)]
    fused = FusedDropout(RATES, alpha, TRIAL)
    fused.streams = Streams(generators)
    out = fused(x)
    kind = AlphaDropout if alpha else Dropout
    for index, rate in enumerate(RATES):
        expected, state = alone(kind(rate), x[index], 10 + index)
        assert torch.equal(out[index], expected), index
        assert torch.equal(generators[index].get_state(), state), index
    # Two trials at one rate draw other masks from their own generators.
    assert not torch.equal(out[1], out[2])


def test_a_fused_layer_draws_new_masks_each_step_and_a_rate_of_zero_keeps_all() -> None:
    """The layer reuses its buffer of drawn words from step to step (and keeps one per batch
    size): every step's masks are still the ones the trial draws alone, step after step, and
    a trial at rate 0 keeps every element and draws nothing."""
    rates = [0.0, 0.3]
    generators = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    fused = FusedDropout(rates, False, TRIAL)
    fused.streams = Streams(generators)
    torch.manual_seed(6)
    single = Dropout(0.3)
    untouched = generators[0].get_state()
    inputs = torch.Generator().manual_seed(0)  # not the global one, which Dropout draws from
    for n in (7, 7, 3, 7):  # a last, smaller batch between full ones
        x = torch.randn(2, n, 9, generator=inputs)
        out = fused(x)
        assert torch.equal(out[0], x[0])
        assert torch.equal(out[1], single(x[1])), n
        assert not torch.equal(out[1], x[1] * dropout.constant("scale", 0.3, x.dtype))
    assert torch.equal(generators[1].get_state(), torch.get_rng_state())
    assert torch.equal(generators[0].get_state(), untouched)


def test_the_packed_layout_puts_each_trials_mask_on_its_own_channels() -> None:
    k, channels = 2, 3
    x = torch.randn(5, k * channels, 4, dtype=torch.float64)  # (N, K*C, L)
    generators = [torch.Generator().manual_seed(index) for index in range(k)]
    fused = FusedDropout([0.3, 0.6], False, PACKED)
    fused.streams = Streams(generators)
    out = fused(x)
    for index, rate in enumerate([0.3, 0.6]):
        part = slice(index * channels, (index + 1) * channels)
        expected, _ = alone(Dropout(rate), x[:, part], index)
        assert torch.equal(out[:, part], expected), index


def test_a_mask_keeps_at_the_rate_and_the_kept_are_scaled_to_keep_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    out = Dropout(0.3)(x)
    kept = (out != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.003)
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)
    scale = torch.tensor(65536 / dropout.levels(0.3), dtype=torch.float32).item()
    assert set(out.unique().tolist()) == {0.0, scale}
    assert dropout.effective_rate(0.3) == pytest.approx(0.3, abs=2**-17)


def test_alpha_dropout_keeps_a_standard_normal_input_standard() -> None:
    torch.manual_seed(0)
    out = AlphaDropout(0.2)(torch.randn(400, 1000))
    assert out.mean().item() == pytest.approx(0.0, abs=0.01)
    assert out.std().item() == pytest.approx(1.0, abs=0.01)


def test_a_rate_near_one_keeps_the_output_finite() -> None:
    torch.manual_seed(0)
    out = Dropout(1 - 1e-9)(torch.ones(100, 100))
    assert torch.isfinite(out).all()
    assert dropout.levels(1 - 1e-9) == 1 and dropout.levels(1e-9) == 65535


def test_in_eval_mode_dropout_changes_nothing_and_draws_nothing() -> None:
    layer = Dropout(0.5).eval()
    x = torch.randn(4, 4)
    before = torch.get_rng_state()
    assert torch.equal(layer(x), x)
    assert torch.equal(torch.get_rng_state(), before)


def test_models_with_torchs_own_dropout_are_not_fused() -> None:
    """torch's nn.Dropout draws other masks: fusing it would change the trial's curve."""
    models = [build_model("mlp", (20,), 4, Params({"dropout": 0.2})) for _ in range(2)]
    for model in models:
        for index, layer in enumerate(model):
            if isinstance(layer, Dropout):
                model[index] = torch.nn.Dropout(0.2)
    with pytest.raises(NotFusable, match="dropout"):
        fuse(models, Streams([torch.Generator() for _ in models]))
