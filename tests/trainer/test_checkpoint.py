"""Checkpoints: a trial resumed from one trains on exactly as if it had never stopped."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from hpo.protocol import Decision
from trainer.train import TrainConfig, TrainingError, train

TIMING = {"epoch_seconds", "samples_per_second", "train_seconds"}
PARAMS: dict[str, Any] = {
    "norm": "batch",
    "dropout": 0.3,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "n_samples": 600,
    "checkpoint_seconds": 0,  # after every epoch, as these tests resume from any of them
}


def _config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "model": "mlp",
        "dataset": "synthetic",
        "epochs": 5,
        "params": dict(PARAMS),
        "seed": 3,
    }
    base.update(overrides)
    return TrainConfig(**base)


def _run(config: TrainConfig) -> tuple[list[tuple[int, dict]], dict[int, bytes]]:
    curve: list[tuple[int, dict]] = []
    blobs: dict[int, bytes] = {}

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append((epoch, {k: v for k, v in metrics.items() if k not in TIMING}))
        return Decision.CONTINUE

    train(config, report, checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob))
    return curve, blobs


def test_resumed_run_equals_the_uninterrupted_one() -> None:
    whole, blobs = _run(_config())
    assert [e for e, _ in whole] == [1, 2, 3, 4, 5]
    assert sorted(blobs) == [1, 2, 3, 4]  # nothing resumes after the last epoch
    resumed, _ = _run(_config(resume=blobs[2]))
    assert [e for e, _ in resumed] == [3, 4, 5]
    assert resumed == whole[2:]  # every metric identical, not merely close


def test_rungs_chained_through_checkpoints_equal_one_run() -> None:
    whole, _ = _run(_config())
    first, blobs = _run(_config(stop_epoch=1))
    second, blobs2 = _run(_config(stop_epoch=3, resume=blobs[1]))
    third, _ = _run(_config(resume=blobs2[3]))
    assert first + second + third == whole


def test_stop_epoch_checkpoints_at_the_rung_end_whatever_the_interval() -> None:
    config = _config(stop_epoch=2)
    config.params["checkpoint_every"] = 3
    curve, blobs = _run(config)
    assert [e for e, _ in curve] == [1, 2] and sorted(blobs) == [2]


def test_a_paused_trial_returns_after_its_checkpoint() -> None:
    saved: list[int] = []
    result = train(
        _config(),
        lambda epoch, m: Decision.PAUSE if epoch == 2 else Decision.CONTINUE,
        checkpoint=lambda epoch, blob: saved.append(epoch),
    )
    assert result.decision is Decision.PAUSE and result.epochs_trained == 2 and saved == [1, 2]


def test_garbage_is_not_a_checkpoint() -> None:
    with pytest.raises(TrainingError, match="cannot resume from the checkpoint"):
        _run(_config(resume=b"not a checkpoint"))


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path("/tmp/hpo-pwned").touch, ())  # type: ignore[return-value]


def test_a_checkpoint_cannot_run_code_when_loaded(tmp_path: Path) -> None:
    marker = Path("/tmp/hpo-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(TrainingError, match="cannot resume"):
        _run(_config(resume=pickle.dumps(_Exploit(), protocol=2)))
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_refused() -> None:
    _, blobs = _run(_config(epochs=2))
    other = _config(epochs=2, params={**PARAMS, "width": 64})
    with pytest.raises(TrainingError, match="cannot resume"):
        _run(TrainConfig(**{**other.__dict__, "resume": blobs[1]}))
