"""`hpo worker`'s process plumbing: its slots per device, which GPU each process sees, the
command line of a fresh process, and the exit code."""

from __future__ import annotations

import pytest

from trainer.processes import Slot, WorkerOptions, combined_exit_code, cuda_visible_for, plan_slots


def _plan(devices: list[str], slots: int | None = None, threads: int | None = None) -> list:
    """The slots on a machine with 4 usable physical cores."""
    return [(s.label, s.threads) for s in plan_slots(devices, slots, threads, cores=lambda: 4)]


def test_the_cpu_gets_a_slot_of_one_thread_per_core_by_default() -> None:
    assert _plan(["cpu"]) == [("cpu#0", 1), ("cpu#1", 1), ("cpu#2", 1), ("cpu#3", 1)]


def test_slots_alone_share_the_cores() -> None:
    assert _plan(["cpu"], slots=2) == [("cpu#0", 2), ("cpu#1", 2)]
    assert _plan(["cpu"], slots=3) == [("cpu#0", 1), ("cpu#1", 1), ("cpu#2", 1)]
    assert _plan(["cpu"], slots=8) == [(f"cpu#{i}", 1) for i in range(8)]
    assert _plan(["cpu"], slots=1) == [("cpu", 4)]


def test_threads_alone_keep_one_slot_as_before_slots() -> None:
    assert _plan(["cpu"], threads=1) == [("cpu", 1)]
    assert _plan(["cpu"], threads=3) == [("cpu", 3)]


def test_slots_and_threads_are_taken_as_given() -> None:
    assert _plan(["cpu"], slots=2, threads=3) == [("cpu#0", 3), ("cpu#1", 3)]


def test_cuda_gets_one_slot_per_gpu_with_torch_s_threads_by_default() -> None:
    assert _plan(["cuda:0", "cuda:1"]) == [("cuda:0", None), ("cuda:1", None)]
    assert _plan(["cuda:1"], slots=2, threads=2) == [("cuda:1#0", 2), ("cuda:1#1", 2)]
    slots = plan_slots(["cuda:0"], 3, cores=lambda: 4)
    assert [(s.device, s.index, s.of) for s in slots] == [("cuda:0", i, 3) for i in range(3)]


@pytest.mark.parametrize(("slots", "threads"), [(0, None), (-1, None), (None, 0), (2, -3)])
def test_counts_below_one_are_refused(slots: int | None, threads: int | None) -> None:
    flag = "--slots" if slots is not None and slots < 1 else "--threads"
    with pytest.raises(ValueError, match=f"{flag} must be at least 1"):
        plan_slots(["cpu"], slots, threads, cores=lambda: 4)


def test_a_fresh_process_serves_its_device_in_one_slot_with_its_threads() -> None:
    options = WorkerOptions("http://box:8000", token="secret", max_trials_per_process=5, fuse=8)
    argv = options.command("cpu", 1)
    assert argv[3:] == [
        "worker",
        "--server",
        "http://box:8000",
        "--devices",
        "cpu",
        "--slots",
        "1",
        "--retry-seconds",
        str(options.retry_seconds),
        "--log-format",
        "text",
        "--threads",
        "1",
        "--max-trials-per-process",
        "5",
        "--fuse",
        "8",
    ]
    assert "secret" not in " ".join(argv)  # the token travels in the environment
    # A CUDA slot's fresh process serves index 0 of its pinned CUDA_VISIBLE_DEVICES, and
    # leaves the threads and the fusion (auto) to their defaults when none were given.
    argv = WorkerOptions("http://box:8000").command("cuda:0")
    assert argv[argv.index("--devices") + 1] == "0"
    assert "--threads" not in argv and "--fuse" not in argv


def test_a_slot_is_labelled_by_its_device_and_index() -> None:
    assert Slot("cpu").label == "cpu"
    assert Slot("cpu", 1, 2).label == "cpu#1"
    assert Slot("cuda:3", 0, 4).label == "cuda:3#0"


def test_without_cuda_visible_devices_the_index_is_the_gpu() -> None:
    assert cuda_visible_for(0, None) == "0"
    assert cuda_visible_for(3, None) == "3"


def test_an_existing_cuda_visible_devices_is_respected() -> None:
    # Slurm gave this job GPUs 2 and 3: torch numbers them 0 and 1.
    assert cuda_visible_for(0, "2,3") == "2"
    assert cuda_visible_for(1, "2,3") == "3"
    assert cuda_visible_for(1, "GPU-aaaa, GPU-bbbb") == "GPU-bbbb"
    # A recycled process has its one device pinned already: index 0 keeps it.
    assert cuda_visible_for(0, "3") == "3"


def test_a_device_beyond_cuda_visible_devices_is_refused() -> None:
    with pytest.raises(ValueError, match=r"CUDA device 2.*CUDA_VISIBLE_DEVICES='0,1'.*only 2"):
        cuda_visible_for(2, "0,1")


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([0, 1], 1), ([0, None], 0), ([0, -9], 137), ([1, -15], 143), ([], 0)],
)
def test_a_signal_counts_as_128_plus_it_in_the_workers_exit_code(
    codes: list[int | None], expected: int
) -> None:
    assert combined_exit_code(codes) == expected
