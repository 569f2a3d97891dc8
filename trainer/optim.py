"""The trial's optimizer and learning-rate schedule, built from its params.

Apart from the loop (trainer.train) because they are what a trial's hyperparameters choose,
while the loop only steps them. The schedule is a pure function of the global step (warm-up,
then cosine or constant), so resuming at an epoch needs no scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from hpo import tunables
from trainer.norms import WEIGHT_LAYERS
from trainer.params import Params, TrainingError

OPTIMIZERS = tunables.choices("optimizer")


@dataclass(frozen=True)
class LoopParams:
    """The loop's own params, validated (models and datasets read theirs)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    nesterov: bool
    batch_size: int
    warmup_epochs: float
    lr_schedule: str
    grad_clip: float | None
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's (beta1, beta2)

    @classmethod
    def from_params(cls, params: Params) -> LoopParams:
        """The loop's tunables, each read and checked through its hpo.tunables declaration."""
        optimizer = params.tunable("optimizer")
        # momentum and nesterov are read for sgd only, beta1 and beta2 for adamw only, so that
        # setting them for the other optimizer is reported as an unused param.
        sgd = optimizer == "sgd"
        momentum = params.tunable("momentum") if sgd else 0.0
        nesterov = params.tunable("nesterov") if sgd else False
        betas = (0.9, 0.999) if sgd else (params.tunable("beta1"), params.tunable("beta2"))
        if nesterov and momentum == 0.0:
            raise TrainingError("param 'nesterov' needs a param 'momentum' above 0")
        return cls(
            optimizer=optimizer,
            lr=params.tunable("lr"),
            weight_decay=params.tunable("weight_decay"),
            momentum=momentum,
            nesterov=nesterov,
            batch_size=params.tunable("batch_size"),
            warmup_epochs=params.tunable("warmup_epochs"),
            lr_schedule=params.tunable("lr_schedule"),
            grad_clip=params.tunable("grad_clip"),
            betas=betas,
        )


@dataclass(frozen=True)
class LrSchedule:
    """Linear warm-up over `warmup_steps`, then cosine decay towards 0 at `total_steps` (or a
    constant rate)."""

    base: float
    warmup_steps: int
    total_steps: int
    cosine: bool

    def at(self, step: int) -> float:
        """The learning rate of global step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base * (step + 1) / self.warmup_steps
        if not self.cosine:
            return self.base
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: nn.Module, loop: LoopParams) -> torch.optim.Optimizer:
    """SGD or AdamW over two param groups: the weights of linear and conv layers with
    `weight_decay` (coupled L2 for SGD, decoupled for AdamW), and everything else (biases,
    normalization scales and shifts, weight-norm magnitudes) without."""
    decay = decayed_weights(model)
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in decay_ids]
    groups = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, loop.weight_decay), (rest, 0.0))
        if params
    ]
    # The fused kernels (CPU and CUDA) update all tensors of a group in one call: for small
    # models the per-tensor loop of the default implementation is a large part of a step.
    if loop.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=loop.lr, momentum=loop.momentum, nesterov=loop.nesterov, fused=True
        )
    return torch.optim.AdamW(groups, lr=loop.lr, betas=loop.betas, fused=True)


def decayed_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights of linear and conv layers; under weight normalization, the direction v and
    not the magnitude g (a scale like a norm layer's)."""
    weights: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS):
            if parametrize.is_parametrized(module, "weight"):
                weights.append(module.get_parameter("parametrizations.weight.original1"))
            else:
                weights.append(module.weight)
    return weights


def build_schedule(loop: LoopParams, epochs: int, steps_per_epoch: int) -> LrSchedule:
    warmup_steps = min(round(loop.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)
    return LrSchedule(loop.lr, warmup_steps, epochs * steps_per_epoch, loop.lr_schedule == "cosine")
