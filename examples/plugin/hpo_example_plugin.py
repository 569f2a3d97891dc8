"""An example hpo plugin: a model, a dataset and a whole training function.

Entry points (see pyproject.toml): `two_layer` (hpo.models), `rings` (hpo.datasets) and
`quadratic` (hpo.trainers). Each receives the trial's params as `options`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn


def build_two_layer(input_shape: tuple[int, ...], n_classes: int, options: dict) -> nn.Module:
    """A two-layer perceptron; `hidden` (default 64) and `dropout` come from the trial."""
    features = math.prod(input_shape)
    hidden = int(options.get("hidden", 64))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.Tanh(),
        nn.Dropout(float(options.get("dropout", 0.0))),
        nn.Linear(hidden, n_classes),
    )


# What the model reads, declared like the built-in trainer's tunables: a worker with this plugin
# sends it when it registers, and the server refuses specs with other values (hidden: 0).
build_two_layer.tunables = [  # type: ignore[attr-defined]
    {"name": "hidden", "type": "int", "default": 64, "low": 1, "description": "hidden units"},
    {
        "name": "dropout",
        "type": "float",
        "default": 0.0,
        "low": 0.0,
        "high": 1.0,
        "high_open": True,
        "description": "dropout rate after the hidden layer",
    },
]


def load_rings(options: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Points on three noisy concentric rings; the class is the ring (`n_samples`, `noise`)."""
    rng = np.random.default_rng(int(options.get("data_seed", 0)))
    n = int(options.get("n_samples", 1500))
    ring = rng.integers(0, 3, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 1.0 + ring + rng.normal(0, float(options.get("noise", 0.15)), n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return {"x_train": x, "y_train": ring.astype(np.int64)}


def train_quadratic(config: Any, report: Any, checkpoint: Any = None) -> Any:
    """A whole training function: gradient descent on (w - 3)^2 with the trial's `lr`.

    It keeps trainer.train's contract: report(epoch, metrics) after every epoch, return a
    TrainResult, stop when the answer ends training."""
    from trainer.train import TrainResult

    w, lr = 0.0, float(config.params.get("lr", 0.1))
    metrics: dict[str, float] = {}
    for epoch in range(1, (config.stop_epoch or config.epochs) + 1):
        w -= lr * 2 * (w - 3)
        loss = (w - 3) ** 2
        metrics = {"val_loss": loss, "val_accuracy": 1 / (1 + loss), "lr": lr}
        decision = report(epoch, metrics)
        if decision.ends_training():
            return TrainResult(epoch, metrics, decision)
    return TrainResult(config.stop_epoch or config.epochs, metrics, None)
