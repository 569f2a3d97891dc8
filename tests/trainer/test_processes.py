"""`hpo worker`'s process plumbing: which GPU each device process sees, and the exit code."""

from __future__ import annotations

import pytest

from trainer.processes import combined_exit_code, cuda_visible_for


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
    [([0, 0], 0), ([0, 1], 1), ([0, None], 0), ([0, -9], 137), ([1, -15], 143)],
)
def test_a_signal_counts_as_128_plus_it_in_the_workers_exit_code(
    codes: list[int | None], expected: int
) -> None:
    assert combined_exit_code(codes) == expected
