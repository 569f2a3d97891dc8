"""The registered models: `mlp`, `cnn` and `resnet`.

Every builder takes the sample shape of the dataset (without the batch axis), the class count
and the trial's params, and returns a module mapping a batch of that shape to class logits.
Sample shapes are channel-first: (F,) feature vectors, (C, L) sequences, (C, H, W) images.
A (F,) input to a convolutional model is read as a one-channel sequence of length F.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainer import plugins
from trainer.norms import Norm
from trainer.params import Params, TrainingError

ModelBuilder = Callable[[tuple[int, ...], int, Params], nn.Module]


def _sequential(*modules: nn.Module) -> nn.Sequential:
    """nn.Sequential without the Identity placeholders (each costs a Python call per step)."""
    return nn.Sequential(*(m for m in modules if not isinstance(m, nn.Identity)))


def _dropout_rate(params: Params, model: str) -> float:
    rate: float = params.tunable("dropout", model)
    return rate


class AddChannel(nn.Module):
    """(N, L) -> (N, 1, L): feature vectors read as one-channel sequences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def _conv_input(sample_shape: tuple[int, ...], model: str) -> tuple[int, int, list[nn.Module]]:
    """(dims, in_channels, input adapters) of a convolutional model for `sample_shape`."""
    if len(sample_shape) == 1:
        return 1, 1, [AddChannel()]
    if len(sample_shape) in (2, 3):
        return len(sample_shape) - 1, sample_shape[0], []
    raise TrainingError(f"model {model!r} cannot take samples of shape {sample_shape}")


def _block(norm: Norm, dims: int, n_in: int, n_out: int, kernel: int) -> list[nn.Module]:
    """conv -> norm -> activation."""
    return [norm.conv(dims, n_in, n_out, kernel), norm.layer(n_out, dims), norm.activation()]


def _head(norm: Norm, dims: int, channels: int, n_classes: int, dropout: float) -> nn.Sequential:
    """Global average pooling and the linear classifier."""
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
    return _sequential(
        pool, nn.Flatten(), norm.dropout(dropout), norm.linear(channels, n_classes, head=True)
    )


def _can_halve(spatial: tuple[int, ...]) -> bool:
    # Keep at least 2 positions per axis: instance norm needs more than one.
    return min(spatial) >= 4


def build_mlp(sample_shape: tuple[int, ...], n_classes: int, params: Params) -> nn.Module:
    """Flatten, then `depth` (default 2) hidden layers of `width` (default 128) units, each
    linear -> norm -> activation -> dropout, then a linear classifier."""
    depth = params.tunable("depth", "mlp")
    width = params.tunable("width", "mlp")
    dropout = _dropout_rate(params, "mlp")
    norm = Norm.from_params(params)
    n_in = 1
    for size in sample_shape:
        n_in *= size
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [norm.linear(n_in, width), norm.layer(width, 0), norm.activation()]
        layers.append(norm.dropout(dropout))
        n_in = width
    layers.append(norm.linear(n_in, n_classes, head=True))
    return _sequential(*layers)


def build_cnn(sample_shape: tuple[int, ...], n_classes: int, params: Params) -> nn.Module:
    """`depth` (default 3) blocks of conv (`channels` default 32, `kernel_size` default 3) ->
    norm -> activation -> max-pool by 2 while every spatial axis is >= 4 -> dropout; then global
    average pooling and a linear classifier. 1-D convolutions for sequences, 2-D for images."""
    depth = params.tunable("depth", "cnn")
    channels = params.tunable("channels", "cnn")
    kernel = params.tunable("kernel_size", "cnn")
    dropout = _dropout_rate(params, "cnn")
    norm = Norm.from_params(params)
    dims, n_in, layers = _conv_input(sample_shape, "cnn")
    spatial = sample_shape[-dims:]
    for _ in range(depth):
        layers += _block(norm, dims, n_in, channels, kernel)
        if _can_halve(spatial):
            layers.append(nn.MaxPool2d(2) if dims == 2 else nn.MaxPool1d(2))
            spatial = tuple(size // 2 for size in spatial)
        layers.append(norm.dropout(dropout))
        n_in = channels
    layers.append(_head(norm, dims, channels, n_classes, dropout))
    return _sequential(*layers)


class ResidualBlock(nn.Module):
    """conv -> norm -> act -> dropout -> conv -> norm, plus the shortcut, then act.

    The shortcut is a strided 1x1 conv with its norm when the shape changes.
    """

    def __init__(
        self, norm: Norm, dims: int, n_in: int, n_out: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        self.body = _sequential(
            norm.conv(dims, n_in, n_out, 3, stride),
            norm.layer(n_out, dims),
            norm.activation(),
            norm.dropout(dropout),
            norm.conv(dims, n_out, n_out, 3),
            norm.layer(n_out, dims),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or n_in != n_out:
            self.shortcut = _sequential(
                norm.conv(dims, n_in, n_out, 1, stride), norm.layer(n_out, dims)
            )
        self.act = norm.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def build_resnet(sample_shape: tuple[int, ...], n_classes: int, params: Params) -> nn.Module:
    """A small ResNet of post-activation basic blocks: a conv stem of `channels` (default 16),
    three stages of `depth` (default 1) residual blocks with channels x1, x2, x4, each later stage
    halving the spatial size while every axis is >= 4, then global average pooling and a linear
    classifier. 1-D for sequences, 2-D for images."""
    depth = params.tunable("depth", "resnet")
    channels = params.tunable("channels", "resnet")
    dropout = _dropout_rate(params, "resnet")
    norm = Norm.from_params(params)
    dims, n_in, layers = _conv_input(sample_shape, "resnet")
    spatial = sample_shape[-dims:]
    layers += _block(norm, dims, n_in, channels, 3)
    n_in = channels
    for stage in range(3):
        n_out = channels * 2**stage
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 and _can_halve(spatial) else 1
            if stride == 2:
                spatial = tuple((size + 1) // 2 for size in spatial)
            layers.append(ResidualBlock(norm, dims, n_in, n_out, stride, dropout))
            n_in = n_out
    layers.append(_head(norm, dims, n_in, n_classes, 0.0))
    return _sequential(*layers)


MODELS: dict[str, ModelBuilder] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "resnet": build_resnet,
}


def build_model(
    name: str, sample_shape: tuple[int, ...], n_classes: int, params: Params
) -> nn.Module:
    """The registered model `name`, initialized for its norm (LeCun normal for SELU).

    Raises TrainingError for an unknown name or a bad parameter (depth, width, channels,
    kernel_size, dropout, norm, groups).
    """
    builder = MODELS.get(name)
    if builder is None:
        return _plugin_model(name, sample_shape, n_classes, params)
    model = builder(sample_shape, n_classes, params)
    Norm.from_params(params).init_(model)
    return model


def _plugin_model(
    name: str, sample_shape: tuple[int, ...], n_classes: int, params: Params
) -> nn.Module:
    """A model from an `hpo.models` entry point; it gets every param as a plain dict."""
    builder = plugins.discover().models.get(name)
    if builder is None:
        known = sorted({*MODELS, *plugins.discover().models})
        raise TrainingError(f"unknown model {name!r}; choose one of {known}")
    options = dict(params.values)
    params.used.update(options)  # the plugin reads what it needs; no unused-param warning
    model = builder(tuple(sample_shape), n_classes, options)
    if not isinstance(model, nn.Module):
        raise TrainingError(
            f"plugin model {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
