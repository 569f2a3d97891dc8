"""How `hpo worker --fuse K` trains what it leased: the largest set of trials that can share a
model as one fused group (trainer.fused.loop), each with its own lease, reports, checkpoints and
completion; the rest go back to the queue at once, for any worker to take.

The group size comes from `--fuse` (trainer.fused.options); on CUDA each group is trimmed to what
a memory estimate says fits, and a group that still runs out of memory in its first epoch is
halved and trained again rather than failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from trainer.fused.grouping import group_indices
from trainer.fused.loop import GroupOutOfMemory, train_group
from trainer.reporting import Checkpoint, Report
from trainer.train import TrainConfig, TrainingError, TrainResult, build_run

if TYPE_CHECKING:
    from hpo.protocol import Assignment
    from trainer.worker import DeviceWorker, Lease

log = logging.getLogger("hpo.worker")

# Share of the free device memory a group may plan to use (the rest: allocator slack, the
# evaluation batch, the cached datasets of later trials).
MEMORY_SHARE = 0.6


def trial_bytes(config: TrainConfig) -> int:
    """An estimate of one fused member's device memory: parameters with their gradient and two
    optimizer moments, its copy of the epoch's gathered training split, and a batch's
    activations (every layer's output, kept for the backward pass, and its gradient)."""
    run = build_run(config)
    n_params = sum(p.numel() for p in run.model.parameters())
    x = run.data.x_train
    outputs: list[int] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
        for module in run.model.modules()
        if not list(module.children())
    ]
    try:
        run.model.eval()
        with torch.no_grad():
            run.model(x[:2])
    finally:
        for hook in hooks:
            hook.remove()
    batch = len(range(*run.bounds[0]))
    per_sample = sum(outputs) // 2
    return 4 * (4 * n_params + x[0].numel() * len(x) + 2 * batch * per_sample)


def memory_fit(config: TrainConfig, wanted: int, free_bytes: int) -> int:
    """How many trials like `config` (one group) fit in `free_bytes`: at least 1, at most
    `wanted`."""
    return max(1, min(wanted, int(free_bytes * MEMORY_SHARE) // max(1, trial_bytes(config))))


class GroupRunner:
    """Trains a worker's leased assignments, fused where they can share a model."""

    def __init__(self, worker: DeviceWorker, size: int) -> None:
        self.worker, self.size = worker, size

    def run(self, assignments: Sequence[Assignment]) -> list[Assignment]:
        """Trains one group of `assignments` to its end (completed, failed, pruned, paused or
        released): the largest set of trials that can share a model (trimmed, on CUDA, to what
        the device's memory holds). Every other trial goes back to the queue at once, before
        training starts, so that an idle worker can take it rather than it waiting leased
        here for a group's training; a trial whose config is unusable fails with the reason.
        Returns the next trials, leased while the group's last epoch trained (the members'
        completions are still on their way, trainer.finishing); [] when none came."""
        if self.worker.shutdown.is_set():
            self.worker.give_back(list(assignments))
            return []
        shapes = [self._config(a, resume=False) for a in assignments]
        ready = [i for i, c in enumerate(shapes) if c is not None]
        if not ready:
            return []
        groups = group_indices([shapes[i] for i in ready], self.size)  # type: ignore[misc]
        largest = max(groups, key=len)  # the first of the largest, in lease order
        chosen = self._fitting([ready[i] for i in largest], shapes)[0]
        self.worker.give_back([assignments[i] for i in ready if i not in chosen])
        if len(chosen) == 1:
            upcoming = self.worker.run_trial(
                assignments[chosen[0]], lease_next=self.worker.takes_more()
            )
            self.worker.trials_run += 1
            return upcoming
        members = [assignments[i] for i in chosen]
        leases = [self.worker.lease_for(a) for a in members]
        for lease in leases:
            lease.group = len(leases)
        self.worker.hold(leases)
        try:
            configs = [self._config(a) for a in members]
            keep = [i for i, c in enumerate(configs) if c is not None]
            if keep:  # a checkpoint that cannot be read failed its trial already
                self._group(
                    [members[i] for i in keep],
                    [configs[i] for i in keep],  # type: ignore[misc]
                    [leases[i] for i in keep],
                )
            self.worker.trials_run += len(chosen)
        finally:
            self.worker.release_held([lease for lease in leases if not lease.sending])
        return self.worker.take_ahead() or []

    def _fitting(self, members: list[int], configs: list[TrainConfig | None]) -> list[list[int]]:
        """`members` in chunks that the device's free memory holds (CUDA; one chunk else)."""
        first = configs[members[0]]
        if len(members) == 1 or first is None or not first.device.startswith("cuda"):
            return [members]
        try:
            free, _ = torch.cuda.mem_get_info(torch.device(first.device))
            size = memory_fit(first, len(members), free)
        except (TrainingError, RuntimeError) as exc:  # the trials will say it themselves
            log.warning("no memory estimate for a group on %s: %s", first.device, exc)
            size = len(members)
        return [members[i : i + size] for i in range(0, len(members), size)]

    def _config(self, assignment: Assignment, resume: bool = True) -> TrainConfig | None:
        """The assignment's config (with the checkpoint it resumes from when `resume`: the
        grouping needs none); None (the trial failed with the reason) when it has none."""
        try:
            start = assignment.start_epoch if resume else 0
            config = TrainConfig.from_assignment(
                assignment.workload,
                assignment.params,
                assignment.epochs,
                self.worker.device,
                stop_epoch=assignment.target_epochs,
                resume=self.worker.resume_state(assignment) if start else None,
            )
            config.leaving = self.worker.shutdown  # a checkpoint before it is handed back
            return config
        except TrainingError as exc:
            self._fail(assignment, str(exc))
            return None

    def _group(
        self, assignments: list[Assignment], configs: list[TrainConfig], leases: list[Lease]
    ) -> None:
        from trainer.worker import short

        for assignment in assignments:
            params = " ".join(f"{k}={short(v)}" for k, v in assignment.params.items())
            start = assignment.start_epoch
            resuming = f" (resuming after epoch {start})" if start else ""
            log.info(
                "%s started on %s%s in a group of %d: %s",
                _label(assignment),
                self.worker.device,
                resuming,
                len(assignments),
                params,
            )
        started = time.monotonic()
        if any(a.target_epochs - a.start_epoch <= 1 for a in assignments):
            self.worker.lease_ahead(leases[0])  # its only epoch is its last
        try:
            results = train_group(
                configs,
                [self._reporter(lease) for lease in leases],
                [self._checkpointer(lease) for lease in leases],
            )
        except GroupOutOfMemory as exc:
            self._halve(assignments, configs, leases, exc)
            return
        for assignment, lease, result in zip(assignments, leases, results, strict=True):
            if isinstance(result, TrainResult):
                # Completions go to the background sender, in the members' order.
                self.worker.finish(assignment, lease, _label(assignment), result, started, False)
                continue
            self.worker.send_held(lease)  # its curve keeps every epoch it trained
            if isinstance(result, TrainingError):
                self._fail(assignment, str(result))
            else:
                self._fail(assignment, f"{type(result).__name__}: {result}")

    def _halve(
        self,
        assignments: list[Assignment],
        configs: list[TrainConfig],
        leases: list[Lease],
        exc: GroupOutOfMemory,
    ) -> None:
        """Trains an out-of-memory group again as two halves (one trial: as ever)."""
        log.warning(
            "a group of %d ran out of memory on %s (%s): training it in halves",
            len(assignments),
            self.worker.device,
            exc,
        )
        # The failed group's tensors are gone with its frames: give their memory back first.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(assignments) // 2
        for part in (slice(0, half), slice(half, None)):
            if len(assignments[part]) == 1:
                self.worker.release_held(leases[part])
                self.worker.run_trial(assignments[part][0])  # the next trials: after the halves
            else:
                self._group(assignments[part], configs[part], leases[part])

    def _reporter(self, lease: Lease) -> Report:
        return lambda epoch, metrics: self.worker.report_epoch(lease, epoch, metrics)

    def _checkpointer(self, lease: Lease) -> Checkpoint:
        return lambda epoch, blob: self.worker.upload_checkpoint(lease, epoch, blob)

    def _fail(self, assignment: Assignment, reason: str) -> None:
        worker = self.worker
        trial_id, token = assignment.trial_id, assignment.token
        worker.final_call(lambda: worker.client.fail(worker.worker_id, trial_id, token, reason))
        log.info("%s failed: %s", _label(assignment), reason)


def _label(assignment: Assignment) -> str:
    return f"trial #{assignment.number} of '{assignment.study_name}'"
