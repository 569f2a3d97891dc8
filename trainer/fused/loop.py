"""The training loop of a fused group: K trials of one model shape trained as one model.

Each member keeps what makes its curve its own: its seed's initial weights (built by the unfused
trainer.train.build_run, so exactly the weights it gets alone), its own shuffling order per epoch
(trainer.train's (seed, epoch) seeding), its own schedule, optimizer settings and dropout stream.
All members take the same number of steps per epoch (the grouping key fixes the batch size and
the dataset), so their epochs end together even when they started at different epochs.

After every epoch each member gets its own fate, exactly as in trainer.train's loop: a NaN loss
fails it, a decision that ends training (prune, pause, stop) ends it, and its last epoch ends it;
the group is then rebuilt from the members left (their weights, optimizer state and generators
carried over), which go on with their own curves. Reports and checkpoints of every member travel
on the member's own helper thread (trainer.reporting.Reporter) while the next epoch trains.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F

from trainer.checkpoint import FORMAT, restore
from trainer.fused.layers import FusedModel, NotFusable, Streams, fuse, member_state
from trainer.fused.optim import FusedOptimizer
from trainer.optim import LoopParams, decayed_weights
from trainer.params import Params, TrainingError
from trainer.reporting import Checkpoint, Report, Reporter
from trainer.train import (
    EVAL_BATCH_SIZE,
    Run,
    TrainConfig,
    TrainResult,
    autocast,
    build_run,
    check_finite,
    epoch_seed,
    held_out,
    parameter_count,
)

log = logging.getLogger(__name__)


class GroupOutOfMemory(Exception):
    """CUDA ran out of memory in a group's first epoch, before any member reported: the same
    configs can be trained again in smaller groups."""


@dataclass
class Member:
    """One trial of a group and its progress."""

    config: TrainConfig
    run: Run  # the trial's unfused run: its model is the template and export target
    loop: LoopParams
    reporter: Reporter
    start: int  # epochs done when it joined (the resumed epoch)
    stop: int
    done: int = 0  # epochs done
    generator: torch.Generator | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    outcome: TrainResult | BaseException | None = None
    resume_optimizer: dict | None = None  # its unfused optimizer state, loaded at fusion


@dataclass
class Group:
    members: list[Member]
    model: FusedModel
    optimizer: FusedOptimizer
    x_train: torch.Tensor
    x_val: torch.Tensor


def train_group(
    configs: Sequence[TrainConfig],
    reports: Sequence[Report],
    checkpoints: Sequence[Checkpoint | None],
    dtype: torch.dtype | None = None,
) -> list[TrainResult | BaseException]:
    """Trains the trials of `configs` (one fusion key, see trainer.fused.grouping) as one fused
    model, each with its own report and checkpoint callbacks as trainer.train.train calls them.

    Returns per trial its TrainResult or the exception that ended it (TrainingError for a bad
    param, a NaN loss or an unusable checkpoint; what a callback raised). `dtype` (tests) trains
    in that floating type. Raises GroupOutOfMemory when CUDA runs out of memory before any
    member reported, and NotFusable when the trials' models cannot be fused.
    """
    members: list[Member] = []
    outcomes: list[TrainResult | BaseException | None] = []
    for config, report, checkpoint in zip(configs, reports, checkpoints, strict=True):
        try:
            reporter = Reporter(report, _encoding(checkpoint))
            members.append(_member(config, reporter, dtype))
            outcomes.append(None)
        except TrainingError as exc:
            outcomes.append(exc)
    try:
        _train(members)
    finally:
        for member in members:
            member.reporter.close()
    live = iter(members)
    return [outcome if outcome is not None else _outcome(next(live)) for outcome in outcomes]


def _outcome(member: Member) -> TrainResult | BaseException:
    assert member.outcome is not None
    return member.outcome


def _member(config: TrainConfig, reporter: Reporter, dtype: torch.dtype | None) -> Member:
    """A trial's unfused run (seeded model, resumed state), as trainer.train builds it."""
    stop = config.stop_epoch or config.epochs
    if config.epochs < 1 or not 1 <= stop <= config.epochs:
        raise TrainingError(
            f"epochs must be >= 1 and stop_epoch within them, got "
            f"{config.epochs} and {config.stop_epoch}"
        )
    run = build_run(config)
    if dtype is not None:
        run.model.to(dtype)
    start = restore(run, config.resume) if config.resume is not None else 0
    loop = LoopParams.from_params(Params(config.params))
    member = Member(config, run, loop, reporter, start, stop)
    member.done = start
    device = run.data.x_train.device
    # The generator the trial's dropout draws from alone: the global one after its model was
    # built (or after restore set it from the checkpoint).
    member.generator = torch.Generator(device)
    if device.type == "cuda":
        member.generator.set_state(torch.cuda.get_rng_state(device))
    else:
        member.generator.set_state(torch.get_rng_state())
    if config.resume is not None:
        member.resume_optimizer = run.optimizer.state_dict()
    return member


def _fuse(members: list[Member]) -> Group:
    """The fused model and optimizer of `members`, from their unfused runs' current state."""
    template = members[0].run.model
    names = {id(p): name for name, p in template.named_parameters()}
    decayed = {names[id(p)] for p in decayed_weights(template)}
    generators = [m.generator for m in members]
    model = fuse([m.run.model for m in members], Streams(generators))  # type: ignore[arg-type]
    optimizer = FusedOptimizer(model.net, [m.loop for m in members], decayed)
    for index, member in enumerate(members):
        if member.resume_optimizer is not None:
            steps = member.done * len(member.run.bounds)
            optimizer.load_trial_state(index, template, member.resume_optimizer, steps)
    data = members[0].run.data
    dtype = next(model.parameters()).dtype
    return Group(members, model, optimizer, data.x_train.to(dtype), data.x_val.to(dtype))


def _carry(group: Group, going_on: set[int]) -> None:
    """Writes every member's fused weights back into its unfused run (its model file and test
    score read them there), and the optimizer state of the members in `going_on` (their ids),
    which a rebuilt group loads; an ended member's would be built and dropped unread."""
    state = group.model.net.state_dict()
    for index, member in enumerate(group.members):
        member.run.model.load_state_dict(member_state(group.model, index, state))
        if id(member) in going_on:
            member.resume_optimizer = group.optimizer.trial_state(index, member.run.model)


def _train(members: list[Member]) -> None:
    live = [m for m in members if m.done < m.stop]
    for member in members:
        if member.done >= member.stop:
            member.outcome = TrainResult(0, {}, None)
    _score_completed([m for m in members if m.done >= m.stop])
    if not live:
        return
    try:
        group = _fuse(live)
    except torch.cuda.OutOfMemoryError as exc:
        raise GroupOutOfMemory(str(exc).splitlines()[0]) from exc
    reported = False
    while group.members:
        try:
            losses, lrs, seconds = _train_epoch(group)
        except torch.cuda.OutOfMemoryError as exc:
            if not reported:
                raise GroupOutOfMemory(str(exc).splitlines()[0]) from exc
            reason = str(exc).splitlines()[0]
            for member in group.members:
                member.outcome = TrainingError(f"CUDA out of memory ({reason})")
            return
        reported = True
        left = _end_epoch(group, losses, lrs, seconds)
        if len(left) != len(group.members):
            going_on = {id(m) for m in left}
            _carry(group, going_on)
            _score_completed([m for m in group.members if id(m) not in going_on])
            if not left:
                return
            group = _fuse(left)


def _score_completed(ended: list[Member]) -> None:
    """Each member that completed its full budget evaluated once on the test split with its
    own weights (carried back into its unfused model), as trainer.train's loop does alone."""
    for member in ended:
        outcome = member.outcome
        full = member.stop == member.run.schedule_epochs
        if isinstance(outcome, TrainResult) and outcome.decision is None and full:
            outcome.test_metrics = held_out(member.run.model, member.run.data)


def _train_epoch(group: Group) -> tuple[list[float], list[float], float]:
    """One epoch of every member: (mean training loss, last lr) per member, and the seconds."""
    started = time.perf_counter()
    members, model, optimizer = group.members, group.model, group.optimizer
    run = members[0].run
    device = group.x_train.device
    model.train()
    # Each member's own order of its epoch (trainer.train's seeding), gathered once.
    orders = []
    for member in members:
        generator = torch.Generator().manual_seed(epoch_seed(member.run.seed, member.done + 1))
        orders.append(torch.randperm(len(run.data.y_train), generator=generator))
    order = torch.stack(orders).to(device)
    x, y = group.x_train[order], run.data.y_train[order]
    steps = [member.done * len(run.bounds) for member in members]
    lrs = [m.run.schedule.at(s) for m, s in zip(members, steps, strict=True)]
    losses: list[torch.Tensor] = []
    for offset, (start, stop) in enumerate(run.bounds):
        lrs = [m.run.schedule.at(s + offset) for m, s in zip(members, steps, strict=True)]
        with autocast(device):
            logits = model(x[:, start:stop])
        yb = y[:, start:stop]
        per_sample = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
        loss = per_sample.view(yb.shape).mean(dim=1)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.clip_()
        optimizer.step(lrs)
        losses.append(loss.detach())
        if all(member.reporter.ended.is_set() for member in members):
            break  # every answer ends training: this epoch is thrown away
    # Summed as trainer.train sums one trial's losses (float32), member by member.
    sizes = torch.tensor([stop - start for start, stop in run.bounds], device=device).float()
    per_step = torch.stack(losses).float()
    n = len(y[0])
    sizes = sizes[: len(losses)]
    totals = [(per_step[:, index] @ sizes).item() / n for index in range(len(members))]
    return totals, lrs, time.perf_counter() - started


@torch.inference_mode()
def _evaluate(group: Group) -> tuple[list[float], list[float]]:
    """(mean cross-entropy, accuracy) per member on the validation split, in eval mode."""
    model, x_val, y_val = group.model, group.x_val, group.members[0].run.data.y_val
    k = len(group.members)
    model.eval()
    loss_sum = torch.zeros(k, device=x_val.device)
    correct = torch.zeros(k, device=x_val.device, dtype=torch.int64)
    for start in range(0, len(y_val), EVAL_BATCH_SIZE):
        xb, yb = x_val[start : start + EVAL_BATCH_SIZE], y_val[start : start + EVAL_BATCH_SIZE]
        with autocast(x_val.device):
            logits = model(xb.unsqueeze(0).expand(k, *xb.shape)).float()
        targets = yb.unsqueeze(0).expand(k, -1)
        per_sample = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        loss_sum += per_sample.view(k, -1).sum(dim=1)
        correct += (logits.argmax(dim=2) == targets).sum(dim=1)
    n = len(y_val)
    return [v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()]


def _end_epoch(group: Group, losses: list[float], lrs: list[float], seconds: float) -> list[Member]:
    """Each member's end of epoch as trainer.train's loop has it; returns those going on."""
    started = time.perf_counter()
    val_losses, val_accuracies = _evaluate(group)
    n_train = len(group.members[0].run.data.y_train)
    fused_state: dict[str, torch.Tensor] | None = None  # taken once for every checkpoint
    left: list[Member] = []
    for index, member in enumerate(group.members):
        epoch = member.done + 1
        try:
            decision = member.reporter.decision()
            if decision is not None and decision.ends_training():
                member.outcome = TrainResult(epoch - 1 - member.start, member.metrics, decision)
                continue
            check_finite("training", losses[index], epoch, lrs[index])
            check_finite("validation", val_losses[index], epoch, lrs[index])
        except BaseException as exc:  # a callback's exception or a NaN: this member's end
            member.outcome = exc
            continue
        epoch_seconds = seconds + time.perf_counter() - started
        member.run.train_seconds += epoch_seconds
        member.metrics = {
            "train_loss": losses[index],
            "val_loss": val_losses[index],
            "val_accuracy": val_accuracies[index],
            "lr": lrs[index],
            "epoch_seconds": epoch_seconds,
            "samples_per_second": n_train / seconds,
            "train_seconds": member.run.train_seconds,
            "n_params": parameter_count(member.run.model),
        }
        member.done = epoch
        # Each member decides alone, on its own training seconds, as trainer.train's loop does.
        run = member.run
        wanted = run.cadence.due(epoch, member.stop, run.schedule_epochs, epoch_seconds)
        wanted = wanted and member.reporter.takes_checkpoints
        state = None
        if wanted:
            fused_state = group.model.net.state_dict() if fused_state is None else fused_state
            state = _snapshot(group, index, epoch, fused_state)
        # The reporter hands the state to _encoding's callback, which serializes it on the
        # reporter's thread: torch.save of K members per epoch need not hold up training.
        member.reporter.send(epoch, member.metrics, cast(bytes | None, state))
        left.append(member)
    for member in [m for m in left if m.done == m.stop]:
        left.remove(member)
        try:
            decision = member.reporter.decision()
        except BaseException as exc:
            member.outcome = exc
            continue
        ended = decision is not None and decision.ends_training()
        member.outcome = TrainResult(
            member.stop - member.start, member.metrics, decision if ended else None
        )
        if not ended and member.stop == member.run.schedule_epochs:
            # Its model file is saved from its unfused run, which `_carry` fills before
            # train_group returns.
            member.outcome.run = member.run
    return left


def _encoding(checkpoint: Checkpoint | None) -> Checkpoint | None:
    """`checkpoint`, taking the state `_snapshot` copied and serializing it first."""
    if checkpoint is None:
        return None

    def send(epoch: int, state: bytes) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        checkpoint(epoch, buffer.getvalue())

    return send


def _snapshot(group: Group, index: int, epoch: int, fused_state: dict[str, torch.Tensor]) -> dict:
    """Member `index`'s checkpoint state in the unfused format (trainer.checkpoint), copied from
    `fused_state` (the fused model's state dict) and the optimizer: it resumes alone or in any
    group once serialized (`_encoding`)."""
    member = group.members[index]
    assert member.generator is not None
    state: dict = {
        "format": FORMAT,
        "epoch": epoch,
        "model": member_state(group.model, index, fused_state),
        "optimizer": group.optimizer.trial_state(index, member.run.model),
        "rng_cpu": torch.get_rng_state(),
        "train_seconds": member.run.train_seconds,
    }
    if member.generator.device.type == "cuda":
        states = torch.cuda.get_rng_state_all()
        states[member.generator.device.index or 0] = member.generator.get_state()
        state["rng_cuda"] = states
    else:
        state["rng_cpu"] = member.generator.get_state()
    return state


__all__ = ["GroupOutOfMemory", "NotFusable", "train_group"]
