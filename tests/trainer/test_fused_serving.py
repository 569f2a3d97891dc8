"""How a worker sizes its fused groups: the --fuse flag, the automatic size per device, and the
memory estimate that trims a CUDA group."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hpo.protocol import Assignment
from service import cli
from tests.support import assignments as support
from trainer.fused import serving
from trainer.fused.loop import GroupOutOfMemory
from trainer.fused.options import CPU_GROUP, CUDA_GROUP, group_size, parse_fuse
from trainer.fused.serving import memory_fit, trial_bytes
from trainer.processes import WorkerOptions
from trainer.train import TrainConfig, TrainResult
from trainer.worker import Lease


def test_fuse_takes_auto_or_a_group_size_and_names_itself_otherwise() -> None:
    assert parse_fuse("auto") is None
    assert parse_fuse("1") == 1 and parse_fuse("64") == 64
    for bad in ("0", "65", "-2", "four", ""):
        with pytest.raises(ValueError, match="--fuse must be 'auto' or a number from 1 to 64"):
            parse_fuse(bad)


def test_the_automatic_size_depends_on_the_device_and_a_given_one_wins() -> None:
    assert group_size("cpu", None) == CPU_GROUP == 8
    assert group_size("cuda:0", None) == CUDA_GROUP == 32
    assert group_size("cuda:0", 1) == 1 and group_size("cpu", 16) == 16
    assert group_size("cpu", 1) == 1  # --fuse 1 turns fusion off on a CPU too


def test_the_memory_estimate_grows_with_the_model_and_data_and_trims_the_group() -> None:
    small = TrainConfig("mlp", "digits", 2, {"width": 32})
    large = TrainConfig("mlp", "digits", 2, {"width": 512})
    assert trial_bytes(large) > trial_bytes(small) > 0
    # At least the parameters, their gradient and two moments, and the gathered digits.
    n_params = 64 * 512 + 512 * 2 + 512 * 512 + 512 * 10 + 10
    assert trial_bytes(large) > 4 * (4 * n_params + 64 * 1000)
    per_trial = trial_bytes(small)
    assert memory_fit(small, 32, free_bytes=10 * per_trial) == 6  # 60% of the free memory
    assert memory_fit(small, 4, free_bytes=10 * per_trial) == 4
    assert memory_fit(small, 32, free_bytes=0) == 1  # a group of one: the unfused case


class FakeWorker:
    """What GroupRunner uses of trainer.worker.DeviceWorker, recording what it is asked."""

    def __init__(self) -> None:
        self.device = "cpu"
        self.shutdown = threading.Event()
        self.trials_run = 0
        self.held: set[int] = set()
        self.alone: list[int] = []
        self.finished: list[int] = []
        self.given_back: list[int] = []
        # What the lease ahead brings (None: nothing was asked), and who asked for it.
        self.ahead: list[Assignment] | None = None
        self.ahead_asked: list[int] = []

    def hold(self, leases: list[Any]) -> None:
        self.held |= {lease.trial_id for lease in leases}

    def release_held(self, leases: list[Any]) -> None:
        self.held -= {lease.trial_id for lease in leases}

    def lease_for(self, assignment: Assignment) -> Lease:
        return Lease(assignment.trial_id, assignment.token, last_epoch=assignment.target_epochs)

    def send_held(self, lease: Lease) -> None:
        pass

    def run_trial(self, assignment: Assignment, lease_next: bool = False) -> list[Assignment]:
        assert assignment.trial_id not in self.held  # its own lease is the loop's now
        self.alone.append(assignment.trial_id)
        return []

    def takes_more(self, training: int = 1) -> bool:
        return True

    def lease_ahead(self, lease: Lease) -> None:
        self.ahead_asked.append(lease.trial_id)

    def take_ahead(self) -> list[Assignment] | None:
        return self.ahead

    def finish(self, assignment: Assignment, *_: Any) -> list[Assignment]:
        self.finished.append(assignment.trial_id)
        return []

    def give_back(self, assignments: list[Assignment]) -> None:
        self.given_back += [a.trial_id for a in assignments]


def assignment(trial_id: int, **params: Any) -> Assignment:
    """Trial `trial_id` of two epochs, with its own learning rate and `params`."""
    return support.assignment(trial_id, params={"lr": 0.01 * trial_id, **params})


def test_a_group_that_runs_out_of_memory_trains_again_in_halves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []

    def train_group(configs: list[TrainConfig], reports: Any, checkpoints: Any) -> list[Any]:
        sizes.append(len(configs))
        if len(configs) > 2:
            raise GroupOutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [TrainResult(2, {"val_accuracy": 0.9}, None) for _ in configs]

    monkeypatch.setattr(serving, "train_group", train_group)
    worker = FakeWorker()
    leased = [assignment(i) for i in range(1, 6)]
    serving.GroupRunner(worker, 8).run(leased)  # type: ignore[arg-type]
    # 5 -> 2 + 3 -> 2 + (1 alone + 2): every trial trained once, none failed.
    assert sizes == [5, 2, 3, 2]
    assert sorted(worker.finished + worker.alone) == [1, 2, 3, 4, 5]
    assert worker.alone == [3] and worker.trials_run == 5
    assert worker.held == set()  # every lease handed on or released


def test_a_worker_trains_its_largest_group_and_gives_the_rest_back_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = FakeWorker()
    trained: list[tuple[list[float], list[int], set[int]]] = []

    def train_group(configs: list[TrainConfig], reports: Any, checkpoints: Any) -> list[Any]:
        # What was given back, and which leases the heartbeat renews, while the group trains.
        trained.append(
            ([c.params["lr"] for c in configs], list(worker.given_back), set(worker.held))
        )
        return [TrainResult(2, {}, None) for _ in configs]

    monkeypatch.setattr(serving, "train_group", train_group)
    leased = [
        assignment(1, batch_size=32),
        assignment(2),
        assignment(3, batch_size=32),
        assignment(4),
        assignment(5, norm="layer"),
        assignment(6),
    ]
    serving.GroupRunner(worker, 8).run(leased)  # type: ignore[arg-type]
    # The three of one shape train; the other shapes are queued again before training starts,
    # and the heartbeat renews only the group's leases while it trains.
    assert trained == [([0.02, 0.04, 0.06], [1, 3, 5], {2, 4, 6})]
    assert worker.finished == [2, 4, 6] and worker.alone == []
    assert worker.trials_run == 3 and worker.held == set()


def test_a_group_larger_than_the_fuse_size_gives_back_the_overflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        serving, "train_group", lambda configs, *_: [TrainResult(2, {}, None) for _ in configs]
    )
    worker = FakeWorker()
    serving.GroupRunner(worker, 2).run([assignment(i) for i in range(1, 5)])  # type: ignore[arg-type]
    assert worker.finished == [1, 2] and worker.given_back == [3, 4]


def test_trials_of_all_different_shapes_train_one_and_give_back_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "train_group", lambda *_: pytest.fail("nothing fuses here"))
    worker = FakeWorker()
    leased = [assignment(1), assignment(2, batch_size=32), assignment(3, norm="layer")]
    serving.GroupRunner(worker, 8).run(leased)  # type: ignore[arg-type]
    assert worker.alone == [1] and worker.given_back == [2, 3] and worker.trials_run == 1


def test_a_worker_shutting_down_gives_back_what_it_leased_without_training_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "train_group", lambda *_: pytest.fail("trained while stopping"))
    worker = FakeWorker()
    worker.shutdown.set()
    serving.GroupRunner(worker, 8).run([assignment(1), assignment(2)])  # type: ignore[arg-type]
    assert worker.given_back == [1, 2] and worker.alone == [] and worker.finished == []


def test_hpo_worker_refuses_a_bad_fuse_naming_the_flag(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["worker", "--server", "http://127.0.0.1:9", "--fuse", "0"]) == 1
    assert (
        "error: --fuse must be 'auto' or a number from 1 to 64, got '0'" in capsys.readouterr().err
    )


def test_a_fresh_worker_process_keeps_its_fuse() -> None:
    assert WorkerOptions(server="http://h:8000").command("cpu")[-2:] != ["--fuse", "auto"]
    assert WorkerOptions(server="http://h:8000", fuse=4).command("cpu")[-2:] == ["--fuse", "4"]


def test_a_group_returns_the_trials_leased_ahead_while_its_last_epoch_trained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next group is leased while this one's last epoch trains (a member's report of the
    epoch before it, or the start of a one-epoch group); run() hands it to the worker's loop,
    which trains it at once while the members' completions are still on their way."""
    monkeypatch.setattr(
        serving, "train_group", lambda configs, *_: [TrainResult(1, {}, None) for _ in configs]
    )
    worker = FakeWorker()
    worker.ahead = [assignment(9), assignment(10)]
    one_epoch = [assignment(i).model_copy(update={"epochs": 1, "target_epochs": 1}) for i in (1, 2)]
    upcoming = serving.GroupRunner(worker, 8).run(one_epoch)  # type: ignore[arg-type]
    assert [a.trial_id for a in upcoming] == [9, 10]
    assert worker.ahead_asked == [1]  # once for the group, before it trained
    assert worker.finished == [1, 2] and worker.held == set()
