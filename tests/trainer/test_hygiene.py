"""Memory hygiene: a trial that leaves device memory behind gets a fresh process next."""

from __future__ import annotations

from trainer.hygiene import SLACK_BYTES, MemoryWatch
from trainer.processes import WorkerOptions
from trainer.worker import DeviceWorker


class Probe:
    def __init__(self) -> None:
        self.held = 100 * 2**20  # what the process holds at start (CUDA context, cache)

    def __call__(self) -> int:
        return self.held


def test_memory_back_at_the_baseline_needs_nothing() -> None:
    probe = Probe()
    watch = MemoryWatch("cuda:0", probe)
    probe.held += SLACK_BYTES // 2  # allocator noise within the slack
    assert watch.leaked() == SLACK_BYTES // 2 and not watch.needs_fresh_process()


def test_memory_left_behind_asks_for_a_fresh_process() -> None:
    probe = Probe()
    watch = MemoryWatch("cuda:0", probe)
    probe.held += 512 * 2**20
    assert watch.needs_fresh_process()
    worker = DeviceWorker(client=None, device="cuda:0", memory=watch)  # type: ignore[arg-type]
    assert worker._wants_fresh_process()


def test_the_cpu_has_nothing_to_measure() -> None:
    assert MemoryWatch("cpu").leaked() == 0


def test_max_trials_per_process() -> None:
    worker = DeviceWorker(client=None, device="cpu", max_trials=2)  # type: ignore[arg-type]
    worker.trials_run = 1
    assert not worker._wants_fresh_process()
    worker.trials_run = 2
    assert worker._wants_fresh_process()


def test_the_fresh_process_serves_the_same_device_without_the_token_on_its_command_line() -> None:
    options = WorkerOptions(
        server="http://h:8000", token="secret", threads=1, max_trials_per_process=5
    )
    command = options.command("cuda:0", 1)
    assert command[-12:] == [
        "--devices",
        "0",
        "--slots",
        "1",
        "--retry-seconds",
        "60.0",
        "--log-format",
        "text",
        "--threads",
        "1",
        "--max-trials-per-process",
        "5",
    ]
    assert "secret" not in " ".join(command)
    assert options.command("cpu")[options.command("cpu").index("--devices") + 1] == "cpu"
