"""Reports travel while the next epoch trains, and the trial still ends after the epoch whose
answer ended it (trainer/reporting.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from hpo.protocol import Decision
from trainer import train as train_module
from trainer.reporting import Superseded
from trainer.train import TrainConfig, TrainResult, train

SMALL = {"n_samples": 160, "batch_size": 8, "lr": 1e-2, "width": 32}
# Epochs of a few hundred batches: an answer has ample time to arrive before one ends.
LONG = {**SMALL, "n_samples": 5000}


class Epochs:
    """Wraps the real train_epoch to see which epochs start and which are thrown away."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: dict[int, threading.Event] = {}
        self.finished: dict[int, threading.Event] = {}
        self.seconds: dict[int, float] = {}
        self.superseded: list[int] = []
        real = train_module.train_epoch

        def spy(run: Any, epoch: int, reporter: Any = None) -> tuple[float, float]:
            self.started.setdefault(epoch, threading.Event()).set()
            began = time.perf_counter()
            try:
                return real(run, epoch, reporter)
            except Superseded:
                self.superseded.append(epoch)
                raise
            finally:
                self.seconds[epoch] = time.perf_counter() - began
                self.finished.setdefault(epoch, threading.Event()).set()

        monkeypatch.setattr(train_module, "train_epoch", spy)

    def wait_started(self, epoch: int) -> bool:
        return self.started.setdefault(epoch, threading.Event()).wait(30)

    def wait_finished(self, epoch: int) -> bool:
        return self.finished.setdefault(epoch, threading.Event()).wait(30)


def test_the_next_epoch_trains_while_a_report_is_on_its_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    epochs = Epochs(monkeypatch)
    seen: list[tuple[int, bool]] = []

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        # A slow server: the answer comes only once the next epoch is under way.
        seen.append((epoch, epoch == 3 or epochs.wait_started(epoch + 1)))
        return Decision.CONTINUE

    result = train(TrainConfig("mlp", "synthetic", 3, dict(SMALL)), report)
    assert seen == [(1, True), (2, True), (3, True)]
    assert (result.epochs_trained, result.decision) == (3, None) and epochs.superseded == []


@pytest.mark.parametrize("decision", [Decision.PRUNE, Decision.PAUSE, Decision.STOP])
def test_an_answer_ending_training_throws_the_epoch_in_progress_away(
    monkeypatch: pytest.MonkeyPatch, decision: Decision
) -> None:
    epochs = Epochs(monkeypatch)
    curve: list[dict[str, float]] = []

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append(metrics)
        assert epochs.wait_started(epoch + 1)
        return decision if epoch == 2 else Decision.CONTINUE

    result = train(TrainConfig("mlp", "synthetic", 6, dict(LONG)), report)
    # The trial ends after epoch 2, as if the loop had waited; epoch 3 stopped part-way.
    assert result == TrainResult(2, curve[-1], decision)
    assert len(curve) == 2 and epochs.superseded == [3]


def test_the_checkpoint_lands_before_its_report_and_none_follows_the_last_epoch() -> None:
    calls: list[str] = []
    train(
        TrainConfig("mlp", "synthetic", 3, {**SMALL, "checkpoint_seconds": 0}),
        lambda epoch, metrics: calls.append(f"report {epoch}") or Decision.CONTINUE,
        checkpoint=lambda epoch, blob: calls.append(f"checkpoint {epoch}"),
    )
    assert calls == ["checkpoint 1", "report 1", "checkpoint 2", "report 2", "report 3"]


def test_a_failing_report_stops_the_trial_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    epochs = Epochs(monkeypatch)

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        assert epochs.wait_started(epoch + 1)
        raise ConnectionError("the server went away")

    with pytest.raises(ConnectionError, match="went away"):
        train(TrainConfig("mlp", "synthetic", 4, dict(LONG)), report)
    assert epochs.superseded == [2]


def test_waiting_for_a_slow_answer_is_not_counted_as_training_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    epochs = Epochs(monkeypatch)
    curve: list[dict[str, float]] = []

    def report(epoch: int, metrics: dict[str, float]) -> Decision:
        curve.append(metrics)
        if epoch == 1:
            # Answer only after epoch 2 has trained, and 2 s later: the loop then waits 2 s
            # for this answer before it validates epoch 2.
            assert epochs.wait_finished(2)
            time.sleep(2.0)
        return Decision.CONTINUE

    train(TrainConfig("mlp", "synthetic", 2, dict(SMALL)), report)
    # Had the wait been counted, epoch 2 would be at least its training time plus 2 s.
    assert curve[1]["epoch_seconds"] < epochs.seconds[2] + 2.0
