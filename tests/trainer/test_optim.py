"""The optimizer and schedule names the trainer knows (trainer/optim.py)."""

from __future__ import annotations

from service.domain import spec
from trainer import optim


def test_the_server_accepts_exactly_the_optimizers_the_trainer_builds() -> None:
    # The server checks a spec's `optimizer` without importing PyTorch, from its own list: a
    # name added to one list only would be refused by the server or fail every trial.
    assert sorted(spec.OPTIMIZERS) == sorted(optim.OPTIMIZERS)
