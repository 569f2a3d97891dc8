"""Normalization factory shared by every model.

`Norm` builds the layers whose choice the `norm` hyperparameter controls: the normalization
layer after a linear or convolutional layer, the activation, dropout, weight normalization of
the layers themselves, and the initialization (LeCun normal for self-normalizing nets).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrizations

from hpo import tunables
from trainer.dropout import AlphaDropout, Dropout
from trainer.params import Params, TrainingError

NORMS = tunables.choices("norm")

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
        """Reads `norm` and `groups` (used by "group" only) through their declarations."""
        return cls(params.tunable("norm"), params.tunable("groups"))

    def cancels_bias(self, dims: int) -> bool:
        """Whether the norm after a linear (dims 0) or conv layer cancels that layer's bias.

        A bias adds one constant per channel. Batch norm subtracts each channel's mean over the
        batch (and positions), instance norm each channel's mean over the positions of one
        sample: either removes the constant. Layer and group norm subtract one mean over several
        channels, so differences between the channels' biases survive them; an MLP's "instance"
        norm is layer norm (its features have no positions).
        """
        return self.kind == "batch" or (self.kind == "instance" and dims > 0)

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
        """Dropout at `rate`; alpha dropout for SELU nets, which keeps their mean and variance.
        Their masks are trainer.dropout's, which a fused group draws alike for all its trials."""
        if rate == 0.0:
            return nn.Identity()
        return AlphaDropout(rate) if self.kind == "selu" else Dropout(rate)

    def linear(self, n_in: int, n_out: int, *, head: bool = False) -> nn.Module:
        """A linear layer; `head` for the classifier, which is followed by no normalization."""
        return self._weighted(nn.Linear(n_in, n_out, bias=head or not self.cancels_bias(0)))

    def conv(self, dims: int, n_in: int, n_out: int, kernel: int, stride: int = 1) -> nn.Module:
        """A same-padded convolution (1-D or 2-D) followed in the model by `layer(n_out, dims)`."""
        cls = nn.Conv2d if dims == 2 else nn.Conv1d
        bias = not self.cancels_bias(dims)
        conv = cls(n_in, n_out, kernel, stride, padding=kernel // 2, bias=bias)
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
