"""Dropout and alpha dropout whose masks a fused group draws alike, for all its trials at once.

A mask is made of 16-bit uniform integers, four to each 64-bit word that `random_` draws over
the whole int64 range (two outputs of the CPU's Mersenne Twister, or of CUDA's Philox): an
element is kept when its integer is below `levels = round((1 - p) * 2**16)`, so the rate is
`p` rounded to a multiple of 2**-16 (`effective_rate`), and the kept elements are scaled by
`2**16 / levels`, exactly the inverse of their probability. torch's own dropout draws one
float64 uniform per element (`bernoulli_`), four times the generator's work, and that draw was
a fifth of a fused MLP epoch (docs/BENCHMARKS.md, "Fused training", round 5).

The unfused models (trainer.models, through trainer.norms) use `Dropout` and `AlphaDropout`
here, which draw their masks from the global generator; a fused layer (trainer.fused.layers)
draws trial k's words from trial k's generator with the same call and count (`draw_words`),
compares all K trials' integers in one operation and applies the same arithmetic (`dropped`,
`alpha_dropped`), so a trial's masks and outputs are the ones it gets alone, to the bit, and
its generator is left in the same state (a checkpoint saves it; resuming draws on from there).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = 1 << 16  # the 16-bit integers a mask element is drawn from
WORD = 4  # 16-bit integers per 64-bit word drawn
_LOWEST = -(1 << 63)  # random_ from here with no upper bound: all 64 bits uniform

# torch.nn.AlphaDropout's constant (the SELU fixed point's -scale * alpha).
ALPHA = 1.7580993408473766


def levels(rate: float) -> int:
    """How many of the 2**16 integers keep an element at dropout `rate` (0 <= rate < 1): at
    least 1 (a rate near 1 still keeps some, and its scale stays finite), at most 2**16 - 1."""
    return min(LEVELS - 1, max(1, round((1 - rate) * LEVELS)))


def effective_rate(rate: float) -> float:
    """The rate the mask drops at: `rate` rounded to a multiple of 2**-16."""
    return 1 - levels(rate) / LEVELS


def threshold(rate: float) -> int:
    """The signed 16-bit integers below which an element is kept (`levels` shifted by -2**15,
    since the words are read as int16); 2**15 - 1 for a rate of 0, whose integers are all
    -2**15 (see `fill_kept`)."""
    if not rate:
        return LEVELS // 2 - 1
    return levels(rate) - LEVELS // 2


def words(count: int) -> int:
    """The 64-bit words a mask of `count` elements draws."""
    return -(-count // WORD)


def draw_words(out: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Fills the int64 tensor `out` with uniform 64-bit words from `generator` (None: the
    device's global generator)."""
    out.random_(_LOWEST, None, generator=generator)


def fill_kept(out: torch.Tensor) -> None:
    """Fills the int64 words `out` so that every element is kept (all integers -2**15)."""
    out.view(torch.int16).fill_(-(LEVELS // 2))


def integers(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """The 16-bit integers of a mask of `shape`, drawn from the global generator of `device`:
    the first prod(shape) of `words(prod(shape))` words, in row-major order."""
    count = math.prod(shape)
    drawn = torch.empty(words(count), dtype=torch.int64, device=device)
    draw_words(drawn)
    return drawn.view(torch.int16)[:count].view(shape)


def noise(drawn: torch.Tensor, threshold: torch.Tensor | int, dtype: torch.dtype) -> torch.Tensor:
    """1 where the integers `drawn` are below `threshold` (kept), else 0, in `dtype`: the
    comparison writes the floating type at once (a third of the time of a boolean mask and a
    cast on the CPU)."""
    out = torch.empty(drawn.shape, dtype=dtype, device=drawn.device)
    return torch.lt(drawn, threshold, out=out)


def constant(name: str, rate: float, dtype: torch.dtype) -> torch.Tensor:
    """A dropout constant at `rate` as a 0-dim tensor of `dtype`, rounded once, the same for the
    unfused and the fused layers: `scale` (1 / keep probability) for dropout; `alpha_scale`,
    `alpha_step` and `alpha_offset` for alpha dropout, torch's formulas at the effective rate.
    A rate of 0 keeps every element unchanged (the unfused layers return their input then; a
    fused group's trial at rate 0 gets these constants with a mask that keeps all)."""
    keep = levels(rate) / LEVELS if rate else 1.0
    if name == "scale":
        return torch.tensor(LEVELS / levels(rate) if rate else 1.0, dtype=dtype)
    p = 1 - keep
    scale = 1 / math.sqrt((ALPHA * ALPHA * p + 1) * keep)
    values = {"alpha_scale": scale, "alpha_step": ALPHA * scale, "alpha_offset": ALPHA * scale * p}
    return torch.tensor(values[name], dtype=dtype)


def dropped(x: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverted dropout: kept elements times `scale`, the others 0 (`noise`, from `noise`, is
    scaled in place)."""
    return x * noise.mul_(scale)


def alpha_dropped(
    x: torch.Tensor,
    noise: torch.Tensor,
    alpha_scale: torch.Tensor,
    alpha_step: torch.Tensor,
    alpha_offset: torch.Tensor,
) -> torch.Tensor:
    """Alpha dropout (torch's formula): x * (noise * a) + (noise - 1) * alpha * a + alpha * a * p,
    `noise` 1 where kept, else 0 (scaled in place); dropped elements take SELU's saturation
    value, then mean and variance are restored."""
    shift = noise.add(-1).mul_(alpha_step).add_(alpha_offset)
    return x * noise.mul_(alpha_scale) + shift


class Dropout(nn.Dropout):
    """nn.Dropout with the masks above (the same rate `p`, rounded to 2**-16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        (scale,) = _constants(self, ("scale",), x)
        return dropped(x, _noise(self.p, x), scale)


class AlphaDropout(nn.AlphaDropout):
    """nn.AlphaDropout with the masks above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.p:
            return x
        values = _constants(self, ("alpha_scale", "alpha_step", "alpha_offset"), x)
        return alpha_dropped(x, _noise(self.p, x), *values)


def _noise(rate: float, x: torch.Tensor) -> torch.Tensor:
    return noise(integers(x.shape, x.device), threshold(rate), x.dtype)


def _constants(
    module: nn.Dropout | nn.AlphaDropout, names: tuple[str, ...], x: torch.Tensor
) -> list[torch.Tensor]:
    """The layer's constants for x's type and device, made once (a host-to-device copy per
    step would cost more than the step's mask on a GPU)."""
    cache: dict = module.__dict__.setdefault("_dropout_constants", {})
    key = (module.p, x.dtype, x.device)
    if key not in cache:
        cache[key] = [constant(name, module.p, x.dtype).to(x.device) for name in names]
    return cache[key]
