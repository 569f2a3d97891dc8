"""Which trials can share a fused group.

Trials share a group when their fused models have the same shapes and their data the same
batches: same model, dataset and device, and equal values of every param except those a fused
group keeps per trial (`PER_TRIAL`: learning rate and schedule, weight decay, momentum, AdamW's
betas, dropout rate, gradient clipping, checkpoint cadence) and the seed. Whether dropout is on
at all is part of the key, since a model without dropout has no dropout layers. A plugin model
or training function is never fused.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from trainer import plugins
from trainer.models import MODELS
from trainer.train import TrainConfig

PER_TRIAL = frozenset(
    {
        "lr",
        "weight_decay",
        "momentum",
        "nesterov",
        "beta1",
        "beta2",
        "dropout",
        "warmup_epochs",
        "lr_schedule",
        "grad_clip",
        "checkpoint_every",
        "checkpoint_seconds",
    }
)


def fuse_key(config: TrainConfig) -> Hashable | None:
    """The key trials must share to train in one group; None when this trial trains alone."""
    if config.model not in MODELS or config.model in plugins.discover().trainers:
        return None
    shared = {key: value for key, value in config.params.items() if key not in PER_TRIAL}
    dropout = config.params.get("dropout", 0.0)
    has_dropout = not isinstance(dropout, int | float) or dropout != 0
    # Params are JSON values (from a spec or a sampler); sorting keys makes the key canonical.
    params = json.dumps(shared, sort_keys=True, default=repr)
    return (config.model, config.dataset, config.device, params, has_dropout)


def group_indices(configs: Sequence[TrainConfig], size: int) -> list[list[int]]:
    """Indices of `configs` in groups of at most `size` trials sharing a key, in first-seen
    order; a trial without a key is a group of its own."""
    groups: list[list[int]] = []
    open_groups: dict[Hashable, list[int]] = {}
    for index, config in enumerate(configs):
        key = fuse_key(config)
        group = open_groups.get(key) if key is not None else None
        if group is None or len(group) >= size:
            group = [index]
            groups.append(group)
            if key is not None:
                open_groups[key] = group
        else:
            group.append(index)
    return groups
