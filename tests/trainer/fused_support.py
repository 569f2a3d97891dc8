"""What the fused-training tests share: a trial trained alone by trainer.train's own loop
functions in float64 (the reference), and a recording report callback.

Why float64: a fused group computes the same sums as the unfused model in another order (batched
and grouped kernels instead of per-trial ones), so the two differ by rounding. In float64 that is
about 1e-16 relative per operation, and the curves the loop reports (it sums losses in float32,
as trainer.train does) then agree to within a float32 rounding step: the tests allow 1e-6
relative, about 8 float32 steps, which no difference of substance (a mask, a batch, a learning
rate or a statistic from another trial) could stay under.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from hpo.protocol import Decision
from trainer.checkpoint import restore, snapshot
from trainer.train import TrainConfig, build_run, evaluate, train_epoch

SMALL = {"n_samples": 128, "batch_size": 32, "channels": 8, "width": 16, "depth": 1}
CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "lr")
RELATIVE = 1e-6


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny models train many times faster so on a shared machine, and
    the figures do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """Records a trial's reports and checkpoints; answers `decide(epoch)`."""

    def __init__(self, decide: Any = lambda epoch: Decision.CONTINUE) -> None:
        self.curve: list[dict[str, float]] = []
        self.epochs: list[int] = []
        self.blobs: dict[int, bytes] = {}
        self.decide = decide

    def __call__(self, epoch: int, metrics: dict[str, float]) -> Decision:
        self.epochs.append(epoch)
        self.curve.append(metrics)
        return Decision(self.decide(epoch))

    def checkpoint(self, epoch: int, blob: bytes) -> None:
        self.blobs[epoch] = blob


def alone(config: TrainConfig, dtype: torch.dtype = torch.float64) -> Recorder:
    """`config` trained alone by trainer.train's functions (build_run, restore, train_epoch,
    evaluate, snapshot) in `dtype`: its curve and a checkpoint after every epoch."""
    run = build_run(config)
    run.model.to(dtype)
    data = run.data
    run.data = dataclasses.replace(data, x_train=data.x_train.to(dtype), x_val=data.x_val.to(dtype))
    start = restore(run, config.resume) if config.resume is not None else 0
    recorder = Recorder()
    for epoch in range(start + 1, (config.stop_epoch or config.epochs) + 1):
        train_loss, lr = train_epoch(run, epoch)
        val_loss, val_accuracy = evaluate(run.model, run.data.x_val, run.data.y_val)
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        recorder(epoch, {**metrics, "lr": lr})
        recorder.checkpoint(epoch, snapshot(run, epoch))
    return recorder


def assert_same_curve(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert len(got) == len(expected)
    for epoch, (mine, theirs) in enumerate(zip(got, expected, strict=True), start=1):
        for key in CURVE_KEYS:
            assert mine[key] == pytest.approx(theirs[key], rel=RELATIVE, abs=1e-9), (epoch, key)
