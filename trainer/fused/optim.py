"""SGD and AdamW for a fused group, each trial with its own hyperparameters and state.

Every parameter (K, *shape) of the fused model is re-homed as a view into one flat tensor, and
its gradient into a flat gradient laid out the same way, which one call zeroes. A step calls
PyTorch's fused optimizer kernel (the one the unfused loop's `fused=True` optimizers run) once per
trial and unfused param group (weight-decayed weights, the rest), on slice k of every tensor,
with that trial's lr, weight decay, momentum and nesterov flag (SGD) or betas (AdamW): the
update is the one the trial gets alone. Gradient clipping scales each trial's slices by that
trial's own norm.

`trial_state` and `load_trial_state` convert a trial's optimizer state from and to the unfused
optimizer's state dict (trainer.optim.build_optimizer), for checkpoints in the unfused format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainer.optim import LoopParams, build_optimizer

EPS = 1e-8  # AdamW's default, which trainer.optim.build_optimizer uses


@dataclass
class TrialHyper:
    """A trial's optimizer settings (from its LoopParams) and step count."""

    loop: LoopParams
    steps: int = 0


class FusedOptimizer:
    """One optimizer over a fused model's K trials."""

    def __init__(self, model: nn.Module, loops: Sequence[LoopParams], decayed: set[str]) -> None:
        """`decayed`: names of the weight-decayed parameters (keys of the unfused state dict).

        Re-homes `model`'s parameters into the flat tensor (values kept)."""
        kinds = {loop.optimizer for loop in loops}
        if len(kinds) != 1:
            raise ValueError(f"one optimizer per group, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.trials = [TrialHyper(loop) for loop in loops]
        named = list(model.named_parameters())
        first = named[0][1]
        self.k = first.shape[0]
        total = sum(p.numel() for _, p in named)
        self.flat = torch.empty(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        # AdamW: first and second moments; SGD: momentum buffers; laid out like the parameters.
        self.moment = torch.zeros_like(self.flat)
        self.moment2 = torch.zeros_like(self.flat) if self.kind == "adamw" else None
        self.params: dict[str, nn.Parameter] = {}
        self.views: dict[str, list[torch.Tensor | None]] = {}
        offset = 0
        for name, param in named:
            size = param.numel()
            views = [
                None if buffer is None else buffer[offset : offset + size].view(param.shape)
                for buffer in (self.flat, self.grad, self.moment, self.moment2)
            ]
            assert views[0] is not None and views[1] is not None
            views[0].copy_(param.detach())
            owner, attr = _owner(model, name)
            new = nn.Parameter(views[0])
            new.grad = views[1]
            owner._parameters[attr] = new
            self.params[name] = new
            self.views[name] = views
            offset += size
        self.names = [name for name, _ in named]
        # Per trial, per unfused param group (decayed weights, the rest): the tensors' slices
        # in the order the unfused optimizer holds them.
        groups = (
            [n for n in self.names if n in decayed],
            [n for n in self.names if n not in decayed],
        )
        self.parts = [
            (decays, names) for decays, names in zip((True, False), groups, strict=True) if names
        ]
        self.step_counts = [
            torch.zeros((), dtype=torch.float32, device=first.device) for _ in loops
        ]
        # Trial k's slices of every buffer per part, made once (a slice per step costs more
        # than the update itself for small models).
        self.slices = [
            [self._slices(index, names) for _, names in self.parts] for index in range(self.k)
        ]

    def _slices(self, index: int, names: list[str]) -> list[list[torch.Tensor]]:
        """Trial `index`'s slices of the tensors `names` in each buffer (param, grad, moment,
        and the second moment for AdamW)."""
        buffers = []
        for which in range(4):
            views = [self.views[name][which] for name in names]
            buffers.append([v[index] for v in views if v is not None])
        return buffers

    def zero_grad(self) -> None:
        self.grad.zero_()

    def clip_(self) -> None:
        """Scales each trial's gradient to at most its grad_clip norm (torch's clip_grad_norm_
        per trial: the norm of the per-tensor norms); trials without grad_clip are untouched."""
        limits = [t.loop.grad_clip for t in self.trials]
        if all(limit is None for limit in limits):
            return
        grads = [self.params[name].grad for name in self.names]
        per_tensor = [torch.linalg.vector_norm(g.view(self.k, -1), dim=1) for g in grads]  # type: ignore[union-attr]
        norms = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)
        max_norm = [float("inf") if limit is None else limit for limit in limits]
        coef = torch.tensor(max_norm, device=norms.device, dtype=norms.dtype) / (norms + 1e-6)
        coef = torch.clamp(coef, max=1.0)
        for grad in grads:
            assert grad is not None
            grad.mul_(coef.view(-1, *[1] * (grad.dim() - 1)))

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One update of every trial, trial k at learning rate lrs[k]."""
        if self.kind == "adamw":
            torch._foreach_add_(self.step_counts, 1)
        for index, (trial, lr) in enumerate(zip(self.trials, lrs, strict=True)):
            for (decays, _), buffers in zip(self.parts, self.slices[index], strict=True):
                wd = trial.loop.weight_decay if decays else 0.0
                self._update(index, buffers, lr, wd, trial)
            trial.steps += 1

    def _update(
        self, index: int, buffers: list[list[torch.Tensor]], lr: float, wd: float, trial: TrialHyper
    ) -> None:
        params, grads, moments, moments2 = buffers
        if self.kind == "adamw":
            beta1, beta2 = trial.loop.betas
            torch._fused_adamw_(
                params, grads, moments, moments2, [],
                [self.step_counts[index]] * len(params), lr=lr, beta1=beta1, beta2=beta2,
                weight_decay=wd, eps=EPS, amsgrad=False, maximize=False,
            )  # fmt: skip
            return
        momentum = trial.loop.momentum
        torch._fused_sgd_(
            params, grads, [] if momentum == 0 else moments,
            weight_decay=wd, momentum=momentum, lr=lr, dampening=0.0,
            nesterov=trial.loop.nesterov, maximize=False, is_first_step=trial.steps == 0,
        )  # fmt: skip

    # ------------------------------------------------------------ unfused optimizer state dicts

    def trial_state(self, index: int, model: nn.Module) -> dict:
        """Trial `index`'s state as the state dict of the unfused optimizer over `model` (the
        trial's unfused model, whose parameter names are the fused model's keys)."""
        optimizer = build_optimizer(model, self.trials[index].loop)
        named = dict(model.named_parameters())
        if self.trials[index].steps:
            for name in self.names:
                views = self.views[name]
                if self.kind == "adamw":
                    optimizer.state[named[name]] = {
                        "step": self.step_counts[index].clone(),
                        "exp_avg": views[2][index].clone(),  # type: ignore[index]
                        "exp_avg_sq": views[3][index].clone(),  # type: ignore[index]
                    }
                elif self.trials[index].loop.momentum != 0:
                    buffer = views[2][index].clone()  # type: ignore[index]
                    optimizer.state[named[name]] = {"momentum_buffer": buffer}
        return optimizer.state_dict()

    @torch.no_grad()
    def load_trial_state(self, index: int, model: nn.Module, state: dict, steps: int) -> None:
        """Loads an unfused optimizer state dict (of the trial's unfused `model`) into row
        `index`; `steps` is the trial's global step count. Raises ValueError (or KeyError) when it
        does not fit the model."""
        optimizer = build_optimizer(model, self.trials[index].loop)
        optimizer.load_state_dict(state)
        named = dict(model.named_parameters())
        self.trials[index].steps = steps
        for name in self.names:
            views = self.views[name]
            saved = optimizer.state.get(named[name], {})
            if self.kind == "adamw":
                if saved:
                    views[2][index].copy_(saved["exp_avg"])  # type: ignore[index]
                    views[3][index].copy_(saved["exp_avg_sq"])  # type: ignore[index]
                    self.step_counts[index].fill_(float(saved["step"]))
            elif saved.get("momentum_buffer") is not None:
                views[2][index].copy_(saved["momentum_buffer"])  # type: ignore[index]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr
