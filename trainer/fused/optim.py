"""SGD and AdamW for a fused group, each trial with its own hyperparameters and state.

A step calls PyTorch's fused optimizer kernel (the one the unfused loop's `fused=True`
optimizers run) once per trial, on slice k of every parameter tensor of the fused model, with
that trial's lr, weight decay, momentum and nesterov flag (SGD) or betas (AdamW): the update is
the one the trial gets alone, bit for bit on the CPU (tests/trainer/test_fused.py checks it in
float32; CUDA's kernels are not checked here). The kernel walks a tensor's memory in order, so every
slice it is given (parameter, gradient, moments) has its parameter's strides: the moments are
made like the parameters, and autograd gives each gradient its parameter's strides.

Gradients are not accumulated into standing buffers: `zero_grad` drops them, so autograd hands
each parameter the gradient it computed without another pass over it, and a step splits them
into per-trial slices (one `unbind` per tensor). AdamW's decoupled weight decay of the weights
is one multiplication of each weight tensor by every trial's (1 - lr * weight_decay) before the
kernel runs without it: the CPU kernel multiplies by the same factor, rounded to the same type, so
the result is the same while the kernel runs once per trial instead of once per trial and
param group. SGD's weight decay is coupled (added to the gradient inside the kernel), so SGD
keeps two calls per trial with weight decay (the decayed weights, the rest). Gradient clipping
scales each trial's slices by that trial's own norm.

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
        """`decayed`: names of the weight-decayed parameters (keys of the unfused state dict)."""
        kinds = {loop.optimizer for loop in loops}
        if len(kinds) != 1:
            raise ValueError(f"one optimizer per group, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.trials = [TrialHyper(loop) for loop in loops]
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.tensors = [param for _, param in named]
        self.k = self.tensors[0].shape[0]
        device = self.tensors[0].device
        # AdamW: first and second moments; SGD: momentum buffers. zeros_like keeps each
        # parameter's strides (a fused linear weight is stored transposed, trainer.fused.layers).
        self.moment = [torch.zeros_like(p) for p in self.tensors]
        self.moment2 = [torch.zeros_like(p) for p in self.tensors] if self.kind == "adamw" else []
        self.decayed = [i for i, name in enumerate(self.names) if name in decayed]
        self.rest = [i for i, name in enumerate(self.names) if name not in decayed]
        # AdamW's step count per trial, each a 0-dim view of one tensor: a step adds 1 to all
        # of them in one operation (2 µs; a `_foreach_add_` over 8 tensors took 12 µs).
        self.steps = torch.zeros(len(loops), dtype=torch.float32, device=device)
        self.step_counts = list(self.steps.unbind(0))
        # The kernel copies a non-contiguous tensor to update it (and back). Its update is
        # elementwise, so it is given each tensor with its axes in memory order, which for a
        # transposed weight is a contiguous view of the same elements.
        self.orders = [_memory_order(p) for p in self.tensors]
        # Trial k's slices of the parameters and moments, made once: slicing every step costs
        # more than the update itself for small models.
        self.param_rows = self._rows(self.tensors)
        self.moment_rows = self._rows(self.moment)
        self.moment2_rows = self._rows(self.moment2) if self.moment2 else []

    def zero_grad(self) -> None:
        """Drops the gradients: backward then hands each parameter its own, uncopied."""
        for param in self.tensors:
            param.grad = None

    def _grads(self) -> list[torch.Tensor]:
        """The parameters' gradients, each with its parameter's strides (autograd gives them
        so; one set by hand is copied); a parameter the loss did not reach gets zeros, as the
        unfused optimizer over a zeroed gradient sees it."""
        grads = []
        for param in self.tensors:
            grad = param.grad
            if grad is None:
                grad = torch.zeros_like(param)
            elif grad.stride() != param.stride():
                grad = torch.empty_like(param).copy_(grad)
            grads.append(grad)
        return grads

    def clip_(self) -> None:
        """Scales each trial's gradient to at most its grad_clip norm (torch's clip_grad_norm_
        per trial: the norm of the per-tensor norms); trials without grad_clip are untouched."""
        limits = [t.loop.grad_clip for t in self.trials]
        if all(limit is None for limit in limits):
            return
        grads = self._grads()
        per_tensor = [
            torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) if g.dim() > 1 else g.abs()
            for g in grads
        ]
        norms = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)
        max_norm = [float("inf") if limit is None else limit for limit in limits]
        limit = torch.tensor(max_norm, dtype=norms.dtype).to(norms.device, non_blocking=True)
        coef = limit / (norms + 1e-6)
        coef = torch.clamp(coef, max=1.0)
        for param, grad in zip(self.tensors, grads, strict=True):
            param.grad = grad.mul_(coef.view(-1, *[1] * (grad.dim() - 1)))

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One update of every trial, trial k at learning rate lrs[k]."""
        grads = self._rows(self._grads())
        if self.kind == "adamw":
            self._adamw(lrs, grads)
        else:
            self._sgd(lrs, grads)
        for trial in self.trials:
            trial.steps += 1

    def _adamw(self, lrs: Sequence[float], grads: list[list[torch.Tensor]]) -> None:
        self.steps.add_(1)
        factors = [1 - lr * t.loop.weight_decay for t, lr in zip(self.trials, lrs, strict=True)]
        if self.decayed and any(factor != 1 for factor in factors):
            first = self.tensors[self.decayed[0]]
            # Rounded to the parameters' type, as the kernel rounds its factor; made on the host
            # and sent without waiting (a blocking copy to a GPU would wait for its queue).
            factor = torch.tensor(factors, dtype=first.dtype).to(first.device, non_blocking=True)
            for index in self.decayed:
                param = self.tensors[index]
                param.mul_(factor.view(-1, *[1] * (param.dim() - 1)))
        for k, (trial, lr) in enumerate(zip(self.trials, lrs, strict=True)):
            beta1, beta2 = trial.loop.betas
            torch._fused_adamw_(
                self.param_rows[k], grads[k], self.moment_rows[k], self.moment2_rows[k], [],
                [self.step_counts[k]] * len(grads[k]), lr=lr, beta1=beta1, beta2=beta2,
                weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False,
            )  # fmt: skip

    def _sgd(self, lrs: Sequence[float], grads: list[list[torch.Tensor]]) -> None:
        for k, (trial, lr) in enumerate(zip(self.trials, lrs, strict=True)):
            wd = trial.loop.weight_decay
            parts = [(self.decayed, wd), (self.rest, 0.0)] if wd else [(None, 0.0)]
            for indices, decay in parts:
                if indices == []:
                    continue
                params, moments = self.param_rows[k], self.moment_rows[k]
                row = grads[k]
                if indices is not None:
                    params = [params[i] for i in indices]
                    moments = [moments[i] for i in indices]
                    row = [row[i] for i in indices]
                momentum = trial.loop.momentum
                torch._fused_sgd_(
                    params, row, [] if momentum == 0 else moments,
                    weight_decay=decay, momentum=momentum, lr=lr, dampening=0.0,
                    nesterov=trial.loop.nesterov, maximize=False, is_first_step=trial.steps == 0,
                )  # fmt: skip

    # ------------------------------------------------------------ unfused optimizer state dicts

    def trial_state(self, index: int, model: nn.Module) -> dict:
        """Trial `index`'s state as the state dict of the unfused optimizer over `model` (the
        trial's unfused model, whose parameter names are the fused model's keys)."""
        optimizer = build_optimizer(model, self.trials[index].loop)
        named = dict(model.named_parameters())
        if self.trials[index].steps:
            for i, name in enumerate(self.names):
                if self.kind == "adamw":
                    optimizer.state[named[name]] = {
                        "step": self.step_counts[index].clone(),
                        "exp_avg": _copy(self.moment[i][index]),
                        "exp_avg_sq": _copy(self.moment2[i][index]),
                    }
                elif self.trials[index].loop.momentum != 0:
                    buffer = _copy(self.moment[i][index])
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
        for i, name in enumerate(self.names):
            saved = optimizer.state.get(named[name], {})
            if self.kind == "adamw":
                if saved:
                    self.moment[i][index].copy_(saved["exp_avg"])
                    self.moment2[i][index].copy_(saved["exp_avg_sq"])
                    self.step_counts[index].fill_(float(saved["step"]))
            elif saved.get("momentum_buffer") is not None:
                self.moment[i][index].copy_(saved["momentum_buffer"])

    def _rows(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per trial k, its slices of `tensors` (laid out like the parameters), each with its
        axes in memory order (one unbind per tensor)."""
        ordered = [
            t if o is None else t.permute(o) for t, o in zip(tensors, self.orders, strict=True)
        ]
        return [list(row) for row in zip(*(t.unbind(0) for t in ordered), strict=True)]


def _memory_order(param: torch.Tensor) -> tuple[int, ...] | None:
    """The permutation that puts a parameter's axes after the first in memory order (largest
    stride first), so that each trial's slice is contiguous; None when they already are."""
    strides = param.stride()
    order = (0, *sorted(range(1, param.dim()), key=lambda axis: -strides[axis]))
    if order == tuple(range(param.dim())):
        return None
    return order


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy, as an unfused optimizer's state holds it."""
    return tensor.clone(memory_format=torch.contiguous_format)
