"""The training loop of one trial: a config in, one report per epoch out.

Knows nothing of HTTP or the database: `trainer.worker` calls `train(config, report)` and turns
the reports into requests, which travel while the next epoch trains (trainer/reporting.py).
Everything tunable comes from `config.params`; see docs/trainer.md.

The whole dataset sits on the device; each epoch gathers it once in a seeded order and takes
batches as slices, and the loss is summed on the device, so the only host syncs are at the end
of an epoch. The learning rate is a pure function of the global step (warm-up, then cosine or
constant), so resuming at an epoch needs no scheduler state; trainer.optim builds the optimizer
and schedule.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpo.protocol import Decision
from trainer import plugins
from trainer.checkpoint import Cadence, restore, snapshot
from trainer.data import Dataset, load_dataset
from trainer.models import build_model
from trainer.norms import Norm
from trainer.optim import OPTIMIZERS, LoopParams, LrSchedule, build_optimizer, build_schedule
from trainer.params import Params, TrainingError
from trainer.reporting import Checkpoint, Report, Reporter, Superseded

__all__ = ["Decision", "TrainConfig", "TrainResult", "TrainingError", "train"]

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024


@dataclass
class TrainConfig:
    model: str
    dataset: str
    epochs: int
    params: dict[str, Any]
    seed: int = 0
    device: str = "cpu"
    # Train up to this epoch (the end of a successive-halving rung); None: up to `epochs`. The
    # learning-rate schedule always spans `epochs`, so stopping early changes nothing before.
    stop_epoch: int | None = None
    # A checkpoint from `train`'s checkpoint callback: go on after its epoch.
    resume: bytes | None = None
    # Set when the worker is shutting down: every epoch that ends from then on is checkpointed,
    # whatever `checkpoint_seconds` says, since the trial is handed back after it.
    leaving: threading.Event | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_assignment(
        cls,
        workload: dict,
        params: dict,
        epochs: int,
        device: str,
        stop_epoch: int | None = None,
        resume: bytes | None = None,
    ) -> TrainConfig:
        """The config of an assigned trial: `params` (sampled) win over `workload` keys; model,
        dataset and seed are taken out, everything else goes into `params`.

        Raises TrainingError when the workload names no model or dataset, or seed is no integer.
        """
        merged = {**workload, **params}
        for key in ("model", "dataset"):
            if not isinstance(merged.get(key), str):
                raise TrainingError(f"workload needs {key!r} as a name, got {merged.get(key)!r}")
        seed = merged.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TrainingError(f"param 'seed' must be an integer, got {seed!r}")
        model, dataset = merged.pop("model"), merged.pop("dataset")
        return cls(model, dataset, epochs, merged, seed, device, stop_epoch, resume)


@dataclass
class TrainResult:
    epochs_trained: int
    metrics: dict[str, float]
    decision: Decision | None
    # The final model on the held-out test split (`held_out`), when the trial trained its full
    # budget and no answer ended it; None otherwise. Sent with the completion, never reported.
    # Not compared: two results are equal when they trained and ended alike.
    test_metrics: dict[str, Any] | None = field(default=None, compare=False)
    # The trained run of a trial that trained its full budget with no answer ending it (the
    # worker saves its model file, trainer.model_file); None otherwise.
    run: Run | None = field(default=None, compare=False)


@dataclass
class Run:
    """What one trial trains with. A checkpoint (trainer.checkpoint) holds the model's and
    optimizer's state dicts; the schedule and the shuffling need no state of their own."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    data: Dataset
    bounds: list[tuple[int, int]]
    grad_clip: float | None
    seed: int
    cadence: Cadence = field(default_factory=Cadence)  # which epochs take a checkpoint
    schedule_epochs: int = 0  # the full fidelity (config.epochs) the schedule spans
    train_seconds: float = 0.0  # epoch_seconds summed over the trial's epochs (a checkpoint's too)


def train(config: TrainConfig, report: Report, checkpoint: Checkpoint | None = None) -> TrainResult:
    """Trains epochs 1..config.epochs (or from the `resume` checkpoint's epoch on, up to
    `stop_epoch`), calling report(epoch, metrics) after each.

    metrics: train_loss, val_loss, val_accuracy, lr (of the epoch's last step), epoch_seconds,
    samples_per_second (training samples per second of training time), and the trial's costs:
    train_seconds (epoch_seconds summed over its epochs so far, across resumes) and n_params
    (the model's parameter count). Before the report of every `checkpoint_every`-th epoch
    (param, default 1) that ends at least `checkpoint_seconds` (param, default 10) of training
    after the last checkpoint, of `stop_epoch`, and of every epoch once `config.leaving` is set,
    calls checkpoint(epoch, bytes) with the state to resume from (trainer.checkpoint.Cadence).
    Both callbacks run in order on a helper thread while the next epoch trains; a decision that
    ends training (prune, pause, stop) ends the trial after its epoch, the epoch in progress
    thrown away. Raises TrainingError for a bad param, model or dataset, a NaN or infinite
    loss, an unusable checkpoint, or CUDA out of memory; an exception of a callback is raised
    as is.
    """
    plugin = plugins.discover().trainers.get(config.model)
    if plugin is not None:  # a whole training function of the user's: it keeps our contract
        result: TrainResult = plugin(config, report, checkpoint)
        full = (config.stop_epoch or config.epochs) == config.epochs
        if result.test_metrics is None and result.decision is None and full:
            result.test_metrics = {
                "unavailable": f"the training function of {config.model!r} gives no test metrics"
            }
        return result
    stop = config.stop_epoch or config.epochs
    if config.epochs < 1 or not 1 <= stop <= config.epochs:
        raise TrainingError(
            f"epochs must be >= 1 and stop_epoch within them, got "
            f"{config.epochs} and {config.stop_epoch}"
        )
    try:
        run = build_run(config)
        start = restore(run, config.resume) if config.resume is not None else 0
        result = _fit(run, start, stop, report, checkpoint)
        if result.decision is None and stop == config.epochs:
            result.run = run
        return result
    except torch.cuda.OutOfMemoryError as exc:
        reason = str(exc).splitlines()[0]
    # Past the except block the traceback, and the model and batches its frames hold, are gone,
    # so the cached allocator can give their memory back before the worker's next trial.
    torch.cuda.empty_cache()
    raise TrainingError(f"CUDA out of memory ({reason}); try a smaller batch_size or model")


def build_run(config: TrainConfig) -> Run:
    """Dataset (cached), seeded model, optimizer and schedule of `config`, on its device.

    Raises TrainingError for a bad param, model, dataset or device.
    """
    params = Params(config.params)
    loop = LoopParams.from_params(params)
    device = _device(config.device)
    data = load_dataset(config.dataset, params, device)
    # Seeded after loading: generating a dataset may draw from the global generators.
    _seed_everything(config.seed)
    model = build_model(config.model, data.sample_shape, data.n_classes, params).to(device)
    bounds = batch_bounds(len(data.y_train), loop.batch_size, Norm.from_params(params).kind)
    every, seconds = params.tunable("checkpoint_every"), params.tunable("checkpoint_seconds")
    saves = Cadence(every, seconds, config.leaving)
    if params.unused():
        log.warning("params not used by the trainer: %s", ", ".join(params.unused()))
    schedule = build_schedule(loop, config.epochs, len(bounds))
    optimizer = build_optimizer(model, loop)
    return Run(
        model, optimizer, schedule, data, bounds, loop.grad_clip, config.seed, saves, config.epochs
    )


def warm_up(device: str) -> None:
    """Pays PyTorch's one-time start-up on `device` before the first trial rather than inside
    it: the first optimizer imports torch._dynamo (about 1.5 s on a CPU), and CUDA creates its
    context. A few steps of a tiny model through both optimizers and the evaluation path.

    Raises TrainingError for an unusable device.
    """
    dev = _device(device)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).to(dev)
    x = torch.randn(4, 4, device=dev)
    y = torch.zeros(4, dtype=torch.long, device=dev)
    for name in OPTIMIZERS:
        optimizer = build_optimizer(model, LoopParams.from_params(Params({"optimizer": name})))
        with autocast(dev):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    evaluate(model, x, y)


def _fit(
    run: Run, start: int, stop: int, report: Report, checkpoint: Checkpoint | None
) -> TrainResult:
    reporter = Reporter(report, checkpoint)
    try:
        return _epochs(run, start, stop, reporter)
    finally:
        reporter.close()


def _epochs(run: Run, start: int, stop: int, reporter: Reporter) -> TrainResult:
    """Epochs start+1..stop. Each epoch's report travels while the next one trains (see
    trainer/reporting.py); an answer that ends training ends the trial after its epoch."""
    metrics: dict[str, float] = {}
    n_train = len(run.data.y_train)
    n_params = parameter_count(run.model)
    for epoch in range(start + 1, stop + 1):
        started = time.perf_counter()
        try:
            train_loss, lr = train_epoch(run, epoch, reporter)
        except Superseded:
            train_loss = lr = math.nan  # thrown away: the answer below ends training
        train_seconds = time.perf_counter() - started
        decision = reporter.decision()
        if decision is not None and decision.ends_training():
            return TrainResult(epoch - 1 - start, metrics, decision)
        waited = time.perf_counter() - started - train_seconds
        check_finite("training", train_loss, epoch, lr)
        val_loss, val_accuracy = evaluate(run.model, run.data.x_val, run.data.y_val)
        check_finite("validation", val_loss, epoch, lr)
        # Time spent waiting for the previous epoch's answer is not this epoch's.
        seconds = time.perf_counter() - started - waited
        run.train_seconds += seconds
        metrics = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "epoch_seconds": seconds,
            "samples_per_second": n_train / train_seconds,
            "train_seconds": run.train_seconds,
            "n_params": n_params,
        }
        wanted = run.cadence.due(epoch, stop, run.schedule_epochs, seconds)
        wanted = wanted and reporter.takes_checkpoints
        blob = snapshot(run, epoch) if wanted else None
        reporter.send(epoch, metrics, blob)
    # The held-out score is computed while the last report's answer is on its way, and thrown
    # away when that answer ends training: a trial paused at a rung or pruned has none.
    test = held_out(run.model, run.data) if stop == run.schedule_epochs else None
    decision = reporter.decision()
    ended = decision is not None and decision.ends_training()
    return TrainResult(stop - start, metrics, decision if ended else None, None if ended else test)


def parameter_count(model: nn.Module) -> float:
    """The number of the model's parameters (weights and biases, not buffers): the `n_params`
    metric, a cost a multi-objective study may minimize."""
    return float(sum(p.numel() for p in model.parameters()))


def train_epoch(run: Run, epoch: int, reporter: Reporter | None = None) -> tuple[float, float]:
    """One pass over the training split (epochs count from 1): (mean loss, last step's lr).

    Raises Superseded (after a batch) when `reporter` says the epoch will be thrown away.
    """
    model, optimizer, data = run.model, run.optimizer, run.data
    model.train()
    device = data.x_train.device
    # One gather per epoch in a seeded order; every batch is then a contiguous slice (a view).
    generator = torch.Generator().manual_seed(epoch_seed(run.seed, epoch))
    order = torch.randperm(len(data.y_train), generator=generator).to(device)
    x, y = data.x_train[order], data.y_train[order]
    parameters = [p for p in model.parameters() if p.requires_grad]
    losses: list[torch.Tensor] = []
    step = (epoch - 1) * len(run.bounds)
    lr = run.schedule.at(step)
    for start, stop in run.bounds:
        lr = run.schedule.at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device):
            loss = F.cross_entropy(model(x[start:stop]), y[start:stop])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.grad_clip is not None:
            nn.utils.clip_grad_norm_(parameters, run.grad_clip)
        optimizer.step()
        # Kept on the device: loss.item() here would wait for the GPU every step.
        losses.append(loss.detach())
        step += 1
        if reporter is not None:
            reporter.check()
    sizes = torch.tensor([stop - start for start, stop in run.bounds], device=device)
    return (torch.stack(losses).float() @ sizes.float()).item() / len(y), lr


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on x, y in eval mode: batch norm uses its
    running statistics, so a sample's output does not depend on its batch; dropout is off."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(y), EVAL_BATCH_SIZE):
        xb, yb = x[start : start + EVAL_BATCH_SIZE], y[start : start + EVAL_BATCH_SIZE]
        with autocast(x.device):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(dim=1) == yb).sum()
    return loss_sum.item() / len(y), correct.item() / len(y)


def held_out(model: nn.Module, data: Dataset) -> dict[str, Any]:
    """A completed trial's final model evaluated once on the test split:
    `{"test_accuracy", "test_loss"}`, or `{"unavailable": why}` when there is no number to
    give (an empty test split: test_fraction 0 and a source without one).

    The test split is neither trained on nor reported per epoch, so no decision of the search
    (selection, pruning, promotion) ever sees it: the number is an unbiased estimate of the
    selected configuration's accuracy, unlike its validation score.
    """
    if len(data.y_test) == 0:
        return {"unavailable": "the dataset has no test split (test_fraction 0 and none given)"}
    dtype = next(model.parameters()).dtype
    loss, accuracy = evaluate(model, data.x_test.to(dtype), data.y_test)
    if not math.isfinite(loss):
        return {"unavailable": f"the test loss is {'NaN' if math.isnan(loss) else 'inf'}"}
    return {"test_accuracy": accuracy, "test_loss": loss}


def batch_bounds(n_samples: int, batch_size: int, norm: str) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch. A last batch of one sample is folded into the one
    before, since batch statistics of a single sample are undefined.

    Raises TrainingError when batch norm would see batches of one sample.
    """
    if norm == "batch" and min(batch_size, n_samples) < 2:
        raise TrainingError(
            f"norm 'batch' needs at least 2 samples per batch, got batch_size {batch_size} "
            f"and {n_samples} training samples; use a larger batch_size or norm layer/group"
        )
    bounds = [
        (start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)
    ]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n_samples)]
    return bounds


def check_finite(split: str, loss: float, epoch: int, lr: float) -> None:
    """Raises TrainingError naming the split, epoch and lr when `loss` is NaN or infinite."""
    if not math.isfinite(loss):
        what = "NaN" if math.isnan(loss) else "inf"
        raise TrainingError(
            f"{split} loss became {what} at epoch {epoch} (lr {lr:.3g}); "
            f"try a smaller lr or set grad_clip"
        )


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"unknown device {name!r}: use 'cpu' or 'cuda:N'") from exc
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise TrainingError(f"device {name!r} is not available on this machine")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a function of (seed, epoch) only, so a resumed trial
    sees the same order as an uninterrupted one."""
    return (seed * 1_000_003 + epoch) % 2**63
