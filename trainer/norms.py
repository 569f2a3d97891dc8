"""Normalization factory shared by every model, and the trainer's parameter reading.

`Norm` builds the layers whose choice the `norm` hyperparameter controls: the normalization
layer after a linear or convolutional layer, the activation, dropout, weight normalization of
the layers themselves, and the initialization (LeCun normal for self-normalizing nets).

This module is the bottom of the trainer's import graph, so it also holds what models, data and
the loop all need: `TrainingError` (re-exported by `trainer.train`, where the worker imports it)
and `Params`, the validated reader of a trial's params.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.utils import parametrizations


class TrainingError(Exception):
    """A trial-level failure with a user-readable reason (str(exc)).

    NaN/inf loss, a bad dataset file, a bad parameter, CUDA out of memory: the worker reports the
    trial `failed` with this reason and goes on serving.
    """


class Params:
    """Read access to a trial's params that validates every value and names the bad parameter.

    Each getter returns the default when the key is absent and raises TrainingError when the value
    has the wrong type or lies outside its range. Keys that were read are recorded in `used`, so the
    loop can warn about keys nothing read (typos).
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.used: set[str] = set()

    def raw(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.values.get(name, default)

    def unused(self) -> list[str]:
        return sorted(set(self.values) - self.used)

    def get_int(self, name: str, default: int, *, low: int | None = None) -> int:
        value = self.raw(name, default)
        # YAML/JSON and some samplers hand integers over as floats (64.0).
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainingError(f"param {name!r} must be an integer, got {value!r}")
        if low is not None and value < low:
            raise TrainingError(f"param {name!r} must be >= {low}, got {value}")
        return value

    def get_float(
        self, name: str, default: float, *, low: float | None = None, below: float | None = None
    ) -> float:
        """A finite float with low <= value (< below when given)."""
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainingError(f"param {name!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise TrainingError(f"param {name!r} must be finite, got {value}")
        if low is not None and value < low:
            raise TrainingError(f"param {name!r} must be >= {low}, got {value}")
        if below is not None and value >= below:
            raise TrainingError(f"param {name!r} must be < {below}, got {value}")
        return value

    def get_optional_float(self, name: str, *, above: float) -> float | None:
        """None when absent or null, else a finite float strictly greater than `above`."""
        if self.raw(name) is None:
            return None
        value = self.get_float(name, 0.0)
        if value <= above:
            raise TrainingError(f"param {name!r} must be > {above}, got {value}")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise TrainingError(f"param {name!r} must be true or false, got {value!r}")
        return value

    def get_str(self, name: str, default: str) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise TrainingError(f"param {name!r} must be a string, got {value!r}")
        return value

    def get_choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        value = self.get_str(name, default)
        options = list(choices)
        if value not in options:
            raise TrainingError(f"param {name!r} must be one of {options}, got {value!r}")
        return value


NORMS = ("none", "batch", "layer", "group", "instance", "weight", "selu")

# Layers that get weight normalization, LeCun init and (in the loop) weight decay.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class Norm:
    """The `norm` choice and the layers it implies.

    `dims` is 0 for feature vectors (N, C), 1 for sequences (N, C, L), 2 for images (N, C, H, W);
    normalization statistics are per channel for convolutions.
    """

    kind: str = "none"
    groups: int = 8

    @classmethod
    def from_params(cls, params: Params) -> Norm:
        """Reads `norm` (default "none") and `groups` (default 8, used by "group" only)."""
        return cls(params.get_choice("norm", "none", NORMS), params.get_int("groups", 8, low=1))

    @property
    def has_shift(self) -> bool:
        """Whether the layer after a linear/conv subtracts a mean, making its bias redundant."""
        return self.kind in ("batch", "layer", "group", "instance")

    def layer(self, channels: int, dims: int) -> nn.Module:
        """The normalization layer after a linear (dims 0) or conv (dims 1, 2) layer.

        Raises TrainingError when `groups` does not divide `channels`.
        """
        if self.kind == "batch":
            return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
        if self.kind == "layer":
            # Over all of one sample's features: (C,), (C, L) or (C, H, W).
            return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)
        if self.kind == "group":
            if channels % self.groups:
                raise TrainingError(
                    f"norm 'group' needs param 'groups' to divide the channels: groups="
                    f"{self.groups} does not divide {channels} channels"
                )
            return nn.GroupNorm(self.groups, channels)
        if self.kind == "instance":
            if dims == 0:
                # A feature vector is one instance with no spatial axis: its instance statistics
                # are those over its features, which is layer normalization.
                return nn.LayerNorm(channels)
            cls = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm1d
            return cls(channels, affine=True)
        return nn.Identity()

    def activation(self) -> nn.Module:
        return nn.SELU() if self.kind == "selu" else nn.ReLU()

    def dropout(self, rate: float) -> nn.Module:
        """Dropout at `rate`; alpha dropout for SELU nets, which keeps their mean and variance."""
        if rate == 0.0:
            return nn.Identity()
        return nn.AlphaDropout(rate) if self.kind == "selu" else nn.Dropout(rate)

    def linear(self, n_in: int, n_out: int, *, head: bool = False) -> nn.Module:
        """A linear layer; `head` for the classifier, which is followed by no normalization."""
        return self._weighted(nn.Linear(n_in, n_out, bias=head or not self.has_shift))

    def conv(self, dims: int, n_in: int, n_out: int, kernel: int, stride: int = 1) -> nn.Module:
        """A same-padded convolution (1-D or 2-D) followed in the model by `layer(n_out, dims)`."""
        cls = nn.Conv2d if dims == 2 else nn.Conv1d
        conv = cls(n_in, n_out, kernel, stride, padding=kernel // 2, bias=not self.has_shift)
        return self._weighted(conv)

    def _weighted(self, module: nn.Module) -> nn.Module:
        if self.kind == "weight":
            return parametrizations.weight_norm(module)
        return module

    def init_(self, model: nn.Module) -> None:
        """LeCun normal initialization for SELU nets (their fixed point assumes it); else no-op."""
        if self.kind != "selu":
            return
        for module in model.modules():
            if isinstance(module, WEIGHT_LAYERS):
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
