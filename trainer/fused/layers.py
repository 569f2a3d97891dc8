"""Fused layers: K trials' copies of one layer as one module whose tensors carry a leading K axis.

`fuse(models)` turns K structurally equal unfused models (trainer.models, one per trial) into one
`FusedModel` with the same module tree and the same state-dict keys, every tensor stacked along a
new first axis (K, *unfused shape). Slice k of the fused state dict is trial k's ordinary state
dict, so checkpoints stay in the unfused format (see `member_state` and `load_member`).

Activations travel in one of two layouts:
- trial layout (K, N, F) for linear layers: a batched matrix product per layer (`baddbmm`);
- packed layout (N, K*C, *spatial) for convolutions: trial k owns channels k*C..(k+1)*C-1 and a
  convolution with groups=K keeps the trials apart. Batch, group, instance and layer norm over
  the packed channels keep per-trial (and per-channel) statistics, since they never mix channels
  of different groups. A 2-D model's packed activations, and a 1-D model's when it has a
  max-pool (the CNN), are 4-D and channels-last in memory on the CPU: a 1-D model's
  (N, K*C, L) is then held as (N, K*C, L, 1), each 1-D convolution and pool run as its 2-D
  counterpart with a kernel of width 1 ("widened"). On the CPU, oneDNN's batch norm and
  max-pool with indices are two to five times faster on channels-last tensors of these shapes
  than on contiguous ones, and its grouped 2-D convolutions faster than on contiguous 2-D
  tensors; but a 1-D grouped convolution on a contiguous (N, K*C, L) is as fast or faster
  (up to 2x for the 1-D ResNet's strided ones), so a 1-D model without a max-pool (the ResNet)
  stays 3-D and contiguous (docs/BENCHMARKS.md, "Round 6"). On CUDA (not measured) the packed
  activations stay contiguous.
Nothing of one trial reaches another: no layer mixes the K axis or the channels of two trials, and
each trial's dropout masks come from its own generator (`Streams`), drawn as trainer.dropout
draws them alone.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainer import dropout
from trainer.models import AddChannel

TRIAL = "trial"  # (K, N, F)
PACKED = "packed"  # (N, K*C, *spatial); 4-D and channels-last where `widened`

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_ELEMENTWISE = (nn.ReLU, nn.SELU, nn.Identity)


class NotFusable(Exception):
    """The models cannot be fused: a layer with no fused counterpart, or trials whose models
    differ in structure."""


class Streams:
    """The random generators of a group's trials, one per trial, in member order. Trial k's
    dropout masks are drawn from generator k only, exactly as the unfused loop draws them from
    the global generator, so a fused trial sees the masks it sees alone."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)


def pack(x: torch.Tensor) -> torch.Tensor:
    """(K, N, C, *spatial) -> (N, K*C, *spatial)."""
    k, n = x.shape[:2]
    return x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A packed activation as the packed layers take it: (N, K*C, L) as (N, K*C, L, 1), and on
    the CPU in channels-last memory order (one copy, at the model's input). On CUDA the memory
    order stays contiguous: what channels-last does to cuDNN's grouped convolutions there was
    not measured."""
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if x.device.type != "cpu":
        return x.contiguous()
    return x.contiguous(memory_format=torch.channels_last)


def _to_packed(x: torch.Tensor) -> torch.Tensor:
    """Trial layout (K, N, F) -> (N, K*F), so a per-channel norm runs on all trials at once."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _to_trial(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K*F) -> (K, N, F)."""
    return x.view(x.shape[0], k, -1).transpose(0, 1)


def _weight(k: int, shape: torch.Size, linear: bool) -> nn.Parameter:
    """K weights of `shape`. A linear layer's (K, out, in) is stored as (K, in, out) transposed:
    the batched product reads it as it lies, and the weight's gradient, which the product
    computes in that layout, then has the weight's strides, so autograd hands it over without
    a transposing copy (trainer.fused.optim keeps its moments in the same layout)."""
    if linear:
        return nn.Parameter(torch.empty(k, shape[1], shape[0]).transpose(1, 2))
    return nn.Parameter(torch.empty(k, *shape))


class _WeightNorm(nn.Module):
    """Holds the magnitude g (original0) and direction v (original1) under the same state-dict
    keys as torch.nn.utils.parametrizations.weight_norm: `parametrizations.weight.original0`."""

    def __init__(self, k: int, shape: torch.Size, linear: bool) -> None:
        super().__init__()
        self.original0 = nn.Parameter(torch.empty(k, shape[0], *[1] * (len(shape) - 1)))
        self.original1 = _weight(k, shape, linear)

    def weight(self) -> torch.Tensor:
        # torch._weight_norm(v, g, dim=0) per trial: each output row scaled to norm g.
        v, g = self.original1, self.original0
        norm = torch.linalg.vector_norm(v, dim=tuple(range(2, v.dim())), keepdim=True)
        return v * (g / norm)


class _Weighted(nn.Module):
    """A fused linear or conv layer's weight (K, out, in, *kernel) and optional bias (K, out)."""

    def __init__(self, k: int, template: nn.Linear | nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.k = k
        linear = isinstance(template, nn.Linear)
        if parametrize.is_parametrized(template, "weight"):
            shape = template.get_parameter("parametrizations.weight.original1").shape
            self.parametrizations = nn.ModuleDict({"weight": _WeightNorm(k, shape, linear)})
            self.weight_norm = True
        else:
            self.weight = _weight(k, template.weight.shape, linear)
            self.weight_norm = False
        bias = template.bias
        self.bias = None if bias is None else nn.Parameter(torch.empty(k, *bias.shape))

    def fused_weight(self) -> torch.Tensor:
        if self.weight_norm:
            return self.parametrizations["weight"].weight()  # type: ignore[operator]
        return self.weight


class FusedLinear(_Weighted):
    """K linear layers on the trial layout: (K, N, in) -> (K, N, out)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.fused_weight().transpose(1, 2)
        if self.bias is None:
            return torch.bmm(x, weight)
        return torch.baddbmm(self.bias.unsqueeze(1), x, weight)


class FusedConv(_Weighted):
    """K convolutions on the packed layout as one 2-D convolution with groups=K (a 1-D one with
    a kernel of width 1 over the packed (N, K*C, L, 1))."""

    def __init__(self, k: int, template: nn.Conv1d | nn.Conv2d) -> None:
        super().__init__(k, template)
        self.one_d = isinstance(template, nn.Conv1d)
        self.widened = True  # set by `fuse`: a 1-D model's activations held 4-D
        stride, padding = template.stride, template.padding
        if isinstance(padding, str):
            raise NotFusable("a convolution with string padding")
        self.stride, self.padding = tuple(stride), tuple(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.fused_weight()
        weight = weight.reshape(-1, *weight.shape[2:])
        bias = None if self.bias is None else self.bias.reshape(-1)
        if not self.one_d:
            return F.conv2d(x, weight, bias, self.stride, self.padding, 1, self.k)
        if not self.widened:
            return F.conv1d(x, weight, bias, self.stride, self.padding, 1, self.k)
        stride, padding = (self.stride[0], 1), (self.padding[0], 0)
        return F.conv2d(x, weight.unsqueeze(-1), bias, stride, padding, 1, self.k)


class FusedPool1d(nn.Module):
    """A 1-D max-pool or adaptive average pool; on the widened packed (N, K*C, L, 1) as its
    2-D counterpart of width 1: the same windows, values and (for the max) the same index
    chosen on ties, so the same gradients."""

    def __init__(self, template: nn.MaxPool1d | nn.AdaptiveAvgPool1d) -> None:
        super().__init__()
        self.template = template
        self.widened = True  # set by `fuse`
        if isinstance(template, nn.MaxPool1d) and (
            template.return_indices or _one(template.dilation) != 1
        ):
            raise NotFusable("a max-pool returning indices or dilated")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.template
        if not self.widened:
            return pool(x)
        if isinstance(pool, nn.AdaptiveAvgPool1d):
            return F.adaptive_avg_pool2d(x, (_one(pool.output_size), 1))
        kernel = _one(pool.kernel_size)
        stride = kernel if pool.stride is None else _one(pool.stride)
        return F.max_pool2d(
            x, (kernel, 1), (stride, 1), (_one(pool.padding), 0), ceil_mode=pool.ceil_mode
        )


def _one(value: Any) -> int:
    """A 1-D module's size argument (an int or a 1-tuple) as an int."""
    return int(value[0]) if isinstance(value, tuple | list) else int(value)


class _Affine(nn.Module):
    """A normalization layer's per-trial scale and shift (K, C)."""

    def __init__(self, k: int, template: Any, layout: str) -> None:
        super().__init__()
        self.k, self.layout, self.eps = k, layout, float(template.eps)
        self.weight = nn.Parameter(torch.empty(k, *template.weight.shape))
        self.bias = nn.Parameter(torch.empty(k, *template.bias.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == PACKED:
            return self.packed(x)
        return _to_trial(self.packed(_to_packed(x)), self.k)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FusedBatchNorm(_Affine):
    """Batch norm over K*C channels: statistics (running ones too) per trial and channel."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, k: int, template: nn.modules.batchnorm._BatchNorm, layout: str) -> None:
        super().__init__(k, template, layout)
        if template.momentum is None or not template.track_running_stats:
            raise NotFusable("batch norm without a momentum or running statistics")
        self.momentum = float(template.momentum)
        channels = template.num_features
        self.register_buffer("running_mean", torch.zeros(k, channels))
        self.register_buffer("running_var", torch.ones(k, channels))
        self.register_buffer("num_batches_tracked", torch.zeros(k, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == TRIAL and not self.training:
            return self._trial_eval(x)
        return super().forward(x)

    def _trial_eval(self, x: torch.Tensor) -> torch.Tensor:
        """Eval mode on the trial layout (K, N, F): each trial's and feature's affine map of
        its running statistics, the arithmetic of torch's kernel (alpha = weight / sqrt(var +
        eps), beta = bias - mean * alpha, x * alpha + beta), without the packed layout's two
        transposing copies of the activations (a fifth of a fused MLP's evaluation). Equal to
        the packed batch norm up to float rounding (torch's kernel fuses its multiply-add)."""
        alpha = torch.rsqrt(self.running_var + self.eps) * self.weight
        beta = self.bias - self.running_mean * alpha
        return torch.addcmul(beta.unsqueeze(1), x, alpha.unsqueeze(1))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        # The views share the buffers' storage: batch_norm updates the running statistics there.
        return F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            self.training,
            self.momentum,
            self.eps,
        )


class FusedGroupNorm(_Affine):
    """Group norm with G groups per trial as K*G groups over K*C channels (layer norm of a conv
    model is G = 1)."""

    def __init__(self, k: int, template: nn.GroupNorm, layout: str) -> None:
        super().__init__(k, template, layout)
        self.groups = int(template.num_groups)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(
            x, self.k * self.groups, self.weight.reshape(-1), self.bias.reshape(-1), self.eps
        )


class FusedInstanceNorm(_Affine):
    """Instance norm over K*C channels (statistics per sample and channel; none kept), computed
    as group norm with K*C groups."""

    def __init__(self, k: int, template: nn.modules.instancenorm._InstanceNorm, layout: str):
        super().__init__(k, template, layout)
        if template.track_running_stats or layout != PACKED:
            raise NotFusable("instance norm with running statistics or without a spatial axis")

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        # Group norm with one channel a group is instance norm; unlike F.instance_norm it has
        # a kernel for channels-last tensors (instance_norm copies them to contiguous ones).
        weight, bias = self.weight.reshape(-1), self.bias.reshape(-1)
        return F.group_norm(x, x.shape[1], weight, bias, self.eps)


class FusedLayerNorm(_Affine):
    """Layer norm of feature vectors on the trial layout (K, N, F)."""

    def __init__(self, k: int, template: nn.LayerNorm, layout: str) -> None:
        super().__init__(k, template, layout)
        if layout != TRIAL or len(template.normalized_shape) != 1:
            raise NotFusable("layer norm over more than the features of a trial-layout input")
        self.shape = tuple(template.normalized_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, self.shape, None, None, self.eps)
        return torch.addcmul(self.bias.unsqueeze(1), normed, self.weight.unsqueeze(1))


class FusedDropout(nn.Module):
    """Dropout (or alpha dropout) at a rate per trial (trainer.dropout's layers), trial k's
    mask drawn from its own generator with the call and count its unfused layer makes, so the
    masks are those the trial gets alone."""

    def __init__(self, rates: Sequence[float], alpha: bool, layout: str) -> None:
        super().__init__()
        self.rates, self.alpha, self.layout = list(rates), alpha, layout
        self.streams: Streams | None = None
        self._columns: dict[tuple, torch.Tensor] = {}
        self._drawn: dict[tuple, tuple[torch.Tensor, list]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return x
        if self.layout == TRIAL:
            noise = dropout.noise(self._integers(x), self._column("threshold", x), x.dtype)
        else:
            noise = self._packed_noise(x)
        if self.alpha:
            names = ("alpha_scale", "alpha_step", "alpha_offset")
            return dropout.alpha_dropped(x, noise, *(self._column(name, x) for name in names))
        return dropout.dropped(x, noise, self._column("scale", x))

    def _integers(self, x: torch.Tensor) -> torch.Tensor:
        """The masks' 16-bit integers in x's layout. Trial k draws `dropout.words(n)` words
        for its n elements from its own generator into row k of one buffer (nothing for a rate
        of 0: its integers are set to keep everything), in its own row-major order, which the
        packed layout then interleaves into the trials' channels; one comparison with each
        trial's threshold then gives all K masks."""
        if self.streams is None:
            raise RuntimeError("a fused dropout layer needs the group's Streams")
        k = len(self.rates)
        count = x.numel() // k
        drawn, draws = self._words(dropout.words(count), x.device)
        for row, generator in draws:
            dropout.draw_words(row, generator)
        integers = drawn.view(torch.int16)[:, :count]
        if self.layout == TRIAL:
            return integers.reshape(x.shape)
        # Trial k's unfused input shape is (N, C, *spatial).
        return integers.reshape(k, x.shape[0], x.shape[1] // k, *x.shape[2:])

    def _words(
        self, n: int, device: torch.device
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Generator]]]:
        """The layer's buffer of K rows of `n` words, made once per size and device, and the
        rows drawn into at each step, each with its trial's generator: a trial at a rate of 0
        keeps every element, so its row is set once. The integers drawn are compared before
        the buffer is drawn into again (the next step's forward), and the comparison's result
        is a tensor of its own; an empty buffer, its rows and its fill per step cost a fused
        MLP's dropout a tenth of its time."""
        assert self.streams is not None
        key = (n, device)
        cached = self._drawn.get(key)
        if cached is None:
            drawn = torch.empty((len(self.rates), n), dtype=torch.int64, device=device)
            draws = []
            rows = zip(drawn.unbind(0), self.rates, self.streams.generators, strict=True)
            for row, rate, generator in rows:
                if rate:
                    draws.append((row, generator))
                else:
                    dropout.fill_kept(row)
            cached = self._drawn[key] = (drawn, draws)
        return cached

    def _packed_noise(self, x: torch.Tensor) -> torch.Tensor:
        """trainer.dropout.noise on the packed layout: each trial's integers, in its own
        (N, C, *spatial) order, compared with its threshold and written straight into a tensor
        of x's (channels-last) memory layout, seen as (N, K, C, *spatial)."""
        k = len(self.rates)
        integers = self._integers(x).transpose(0, 1)  # (N, K, C, *spatial)
        noise = torch.empty_like(x)
        key = ("threshold5", x.device, x.dim())
        threshold = self._columns.get(key)
        if threshold is None:
            values = torch.tensor([dropout.threshold(p) for p in self.rates], dtype=torch.int16)
            threshold = values.view(1, k, *[1] * (x.dim() - 1)).to(x.device)
            self._columns[key] = threshold
        torch.lt(integers, threshold, out=noise.unflatten(1, (k, x.shape[1] // k)))
        return noise

    def _column(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A per-trial constant (trainer.dropout.constant, or the int16 threshold) shaped to
        broadcast over `like`'s
        layout ((K, 1, ...) in the trial layout, each trial's value over its channels when
        packed), made once per layout and type."""
        key = (
            name,
            like.dtype,
            like.device,
            like.shape[1:] if self.layout == PACKED else like.dim(),
        )
        column = self._columns.get(key)
        if column is None:
            if name == "threshold":
                values = torch.tensor([dropout.threshold(p) for p in self.rates], dtype=torch.int16)
            else:
                values = torch.stack([dropout.constant(name, p, like.dtype) for p in self.rates])
            if self.layout == TRIAL:
                column = values.view(-1, *[1] * (like.dim() - 1))
            else:
                per_channel = values.repeat_interleave(like.shape[1] // len(self.rates))
                column = per_channel.view(1, -1, *[1] * (like.dim() - 2))
            column = column.to(like.device)
            self._columns[key] = column
        return column


class FusedFlatten(nn.Module):
    """nn.Flatten() of each trial's samples; from the packed layout back to the trial layout."""

    def __init__(self, k: int, layout: str) -> None:
        super().__init__()
        self.k, self.layout = k, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == TRIAL:
            return x.flatten(2)
        return x.reshape(x.shape[0], self.k, -1).transpose(0, 1)


class FusedAddChannel(nn.Module):
    """AddChannel of K trials: (K, N, L) -> packed (N, K*1, L), widened (N, K*1, L, 1) and
    channels-last when `widened`."""

    def __init__(self) -> None:
        super().__init__()
        self.widened = True  # set by `fuse`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(0, 1)
        return channels_last(x) if self.widened else x


class FusedModel(nn.Module):
    """K trials' models as one: (K, N, *sample) -> (K, N, n_classes) logits.

    `net` has the unfused models' module tree, so its state-dict keys are theirs.
    """

    def __init__(self, net: nn.Module, k: int, pack_input: bool, streams: Streams) -> None:
        super().__init__()
        self.net, self.k, self.pack_input = net, k, pack_input
        self.streams = streams
        self.widened = True  # set by `fuse`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pack_input:
            return self.net(x)
        x = pack(x)
        return self.net(channels_last(x) if self.widened else x)


def fuse(models: Sequence[nn.Module], streams: Streams) -> FusedModel:
    """One fused model of `models` (each an unfused model of one trial, same structure), holding
    their current weights and statistics. Raises NotFusable when they cannot be fused."""
    pack_input = isinstance(_first_leaf(models[0]), nn.Conv1d | nn.Conv2d)
    layout = [PACKED if pack_input else TRIAL]
    net = _convert(list(models), layout)
    fused = FusedModel(net, len(models), pack_input, streams)
    widened = _widened(models[0])
    for module in fused.modules():
        if isinstance(module, FusedDropout):
            module.streams = streams
        if isinstance(module, FusedModel | FusedAddChannel | FusedConv | FusedPool1d):
            module.widened = widened
    weight = next(models[0].parameters())
    fused.to(device=weight.device, dtype=weight.dtype)
    for index, model in enumerate(models):
        load_member(fused, index, model.state_dict())
    return fused


def _widened(model: nn.Module) -> bool:
    """Whether the fused model holds its packed activations 4-D and channels-last: a 2-D model
    always, a 1-D one when it has a max-pool (module docstring)."""
    modules = list(model.modules())
    if any(isinstance(m, nn.Conv2d) for m in modules):
        return True
    return any(isinstance(m, nn.MaxPool1d) for m in modules)


def member_state(
    fused: FusedModel, index: int, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Trial `index`'s ordinary (unfused) state dict, as copies; `state`: the fused model's
    state dict when the caller has it already (one for all members)."""
    state = fused.net.state_dict() if state is None else state
    return {
        key: value[index].clone(memory_format=torch.contiguous_format)
        for key, value in state.items()
    }


@torch.no_grad()
def load_member(fused: FusedModel, index: int, state: dict[str, torch.Tensor]) -> None:
    """Writes an unfused state dict into slice `index`. Raises NotFusable when its keys or
    shapes are not the fused model's."""
    own = fused.net.state_dict()
    if set(own) != set(state):
        raise NotFusable(f"state dict keys differ: {sorted(set(own) ^ set(state))}")
    for key, value in own.items():
        if value[index].shape != state[key].shape:
            raise NotFusable(f"{key}: shape {tuple(state[key].shape)}, fused {value.shape}")
        value[index].copy_(state[key])


def _first_leaf(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if not list(module.children()) or isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            return module
    raise NotFusable("a model without layers")


def _convert(modules: list[nn.Module], layout: list[str]) -> nn.Module:
    """The fused counterpart of `modules` (trial k's module at one place in the tree);
    `layout` holds the current activation layout, updated in forward order."""
    template = modules[0]
    kinds = {_kind(m) for m in modules}
    if len(kinds) != 1:
        raise NotFusable(f"trials differ in a layer: {sorted(kind.__name__ for kind in kinds)}")
    leaf = _convert_leaf(modules, layout[0])
    if leaf is not None:
        if isinstance(template, AddChannel) or (
            isinstance(template, nn.Flatten) and layout[0] == PACKED
        ):
            layout[0] = PACKED if isinstance(template, AddChannel) else TRIAL
        return leaf
    if template._parameters or template._buffers or not template._modules:
        raise NotFusable(f"no fused counterpart of layer {type(template).__name__}")
    names = [list(m._modules) for m in modules]
    if any(n != names[0] for n in names):
        raise NotFusable("trials' models differ in structure")
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for name in names[0]:
        children[name] = _convert([m._modules[name] for m in modules], layout)  # type: ignore[misc]
    if isinstance(template, nn.Sequential):
        children = _pool_before_relu(children)
    # The container's own forward (nn.Sequential, a residual block) works on fused children.
    clone = copy.copy(template)
    clone.__dict__ = dict(template.__dict__)
    clone._modules = children  # type: ignore[assignment]
    return clone


def _pool_before_relu(children: OrderedDict[str, nn.Module]) -> OrderedDict[str, nn.Module]:
    """`children` with each ReLU that a max-pool follows moved after the pool, which then
    runs on twice (four times) fewer elements. The outputs and gradients are the same to the
    bit: max commutes with the monotone ReLU, and where they differ (a window whose maximum
    is at most 0, where the ReLU's output ties at 0 and the pool picks the first) the ReLU's
    gradient is 0 both ways. A window of a positive maximum picks the same element both
    ways, the ReLU keeping the order of the elements it passes and mapping the others below
    it. The state dict is unchanged (neither layer holds state)."""
    names = list(children)
    index = 0
    while index < len(names) - 1:
        first, second = children[names[index]], children[names[index + 1]]
        if isinstance(first, nn.ReLU) and _is_max_pool(second):
            names[index], names[index + 1] = names[index + 1], names[index]
            index += 1
        index += 1
    return OrderedDict((name, children[name]) for name in names)


def _is_max_pool(module: nn.Module) -> bool:
    if isinstance(module, FusedPool1d):
        return isinstance(module.template, nn.MaxPool1d)
    return isinstance(module, nn.MaxPool2d)


def _kind(module: nn.Module) -> type:
    """The module's class; for a parametrized one (weight norm), the class it was made from."""
    if parametrize.is_parametrized(module):
        return type(module).__mro__[1]
    return type(module)


def _convert_leaf(modules: list[nn.Module], layout: str) -> nn.Module | None:
    template, k = modules[0], len(modules)
    if isinstance(template, nn.Linear):
        if layout != TRIAL:
            raise NotFusable("a linear layer on a convolutional layout")
        return FusedLinear(k, template)
    if isinstance(template, nn.Conv1d | nn.Conv2d):
        if layout != PACKED or template.groups != 1 or template.dilation not in ((1,), (1, 1)):
            raise NotFusable("a grouped or dilated convolution, or one on feature vectors")
        return FusedConv(k, template)
    if isinstance(template, nn.modules.batchnorm._BatchNorm):
        return FusedBatchNorm(k, template, layout)
    if isinstance(template, nn.GroupNorm):
        return FusedGroupNorm(k, template, layout)
    if isinstance(template, nn.modules.instancenorm._InstanceNorm):
        return FusedInstanceNorm(k, template, layout)
    if isinstance(template, nn.LayerNorm):
        return FusedLayerNorm(k, template, layout)
    if isinstance(template, nn.Dropout | nn.AlphaDropout):
        if not isinstance(template, dropout.Dropout | dropout.AlphaDropout):
            raise NotFusable("torch's own dropout: a fused layer draws trainer.dropout's masks")
        rates = [float(m.p) for m in modules]  # type: ignore[arg-type]
        return FusedDropout(rates, isinstance(template, nn.AlphaDropout), layout)
    if isinstance(template, nn.Flatten):
        if template.start_dim != 1 or template.end_dim != -1:
            raise NotFusable("a flatten other than nn.Flatten()")
        return FusedFlatten(k, layout)
    if isinstance(template, AddChannel):
        return FusedAddChannel()
    if isinstance(template, _ELEMENTWISE):
        return copy.deepcopy(template)
    if isinstance(template, _POOLS):
        if layout != PACKED:
            raise NotFusable("pooling of feature vectors")
        if isinstance(template, nn.MaxPool1d | nn.AdaptiveAvgPool1d):
            return FusedPool1d(copy.deepcopy(template))
        return copy.deepcopy(template)
    return None
