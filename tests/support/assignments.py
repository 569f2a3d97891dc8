"""Leases as a worker receives them, for the trainer's tests that drive a worker by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hpo.protocol import Assignment

__all__ = ["assignment"]


def assignment(
    trial_id: int,
    epochs: int = 2,
    *,
    token: str | None = None,
    number: int | None = None,
    target_epochs: int | None = None,
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> Assignment:
    """The assignment of trial `trial_id` of study 1 (`s`): an MLP on digits, `epochs` from
    scratch (up to `target_epochs`, default all of them), maximizing `val_accuracy`; its token
    is `t<trial_id>` and its number `trial_id` unless given; `extra` sets any other field
    (`keep_model`, `report_interval`, ...)."""
    return Assignment(
        trial_id=trial_id,
        token=f"t{trial_id}" if token is None else token,
        study_id=1,
        study_name="s",
        number=trial_id if number is None else number,
        attempt=1,
        params={} if params is None else params,
        workload={"model": "mlp", "dataset": "digits"},
        objective={"metric": "val_accuracy", "direction": "maximize"},
        epochs=epochs,
        target_epochs=target_epochs or epochs,
        start_epoch=0,
        checkpoint_id=None,
        rung=0,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    )
